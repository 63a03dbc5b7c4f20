"""Anthropic Messages ⇄ AWS Bedrock Runtime (InvokeModel / InvokeModelWithResponseStream).

The bridge hands a Bedrock-backed provider's `/v1/messages` requests to `BedrockClient`:
`invoke()` for `stream: false`, `stream()` for `stream: true`. Both answer in the Anthropic
format (JSON, SSE, or an Anthropic error body with the matching status).
"""

from data_plane.bedrock.client import BedrockClient
from data_plane.bedrock.config import BedrockConfig
from data_plane.bedrock.credentials import (
    AwsCredentials,
    CredentialResolver,
)
from data_plane.bedrock.results import BedrockStream, UpstreamResult
from data_plane.bedrock.translate import bedrock_model_id, map_error

__all__ = [
    "AwsCredentials",
    "BedrockClient",
    "BedrockConfig",
    "BedrockStream",
    "CredentialResolver",
    "UpstreamResult",
    "bedrock_model_id",
    "map_error",
]
