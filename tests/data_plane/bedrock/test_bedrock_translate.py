"""Pure translation rules: model ids, request bodies, error mapping, configuration."""

from __future__ import annotations

from typing import Any

import pytest
from bedrock_testkit import HAIKU, SONNET, static_config

from aibridge.config.v1 import provider_pb2
from aibridge.masking import Secret
from data_plane.bedrock import BedrockConfig
from data_plane.bedrock.translate import bedrock_body, bedrock_model_id, beta_flags, map_error


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("claude-3-5-haiku-20241022", HAIKU),
        ("claude-haiku-4-5", HAIKU),
        ("Claude-HAIKU-4-5-20251001", HAIKU),
        ("claude-sonnet-4-5-20250929", SONNET),
        ("claude-opus-4-1", SONNET),
        ("", SONNET),
        (None, SONNET),
        (
            "us.anthropic.claude-3-5-haiku-20241022-v1:0",
            "us.anthropic.claude-3-5-haiku-20241022-v1:0",
        ),
        ("anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-haiku-20240307-v1:0"),
        ("global.anthropic.claude-opus-4", "global.anthropic.claude-opus-4"),
        ("eu.anthropic.claude-sonnet-4", "eu.anthropic.claude-sonnet-4"),
        ("my-custom:model", "my-custom:model"),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.x",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.x",
        ),
    ],
)
def test_model_mapping(requested: object, expected: str) -> None:
    """Bedrock ids pass through, haiku names go to small_fast_model, the rest to model."""
    assert bedrock_model_id(requested, static_config()) == expected


def test_body_translation_drops_model_and_stream_and_adds_version() -> None:
    """model/stream leave the body, anthropic_version is added, everything else is untouched."""
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "stream": True,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
        "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
        "metadata": {"user_id": "u"},
    }
    snapshot = dict(body)
    out = bedrock_body(body, [])
    assert body == snapshot
    assert out == {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
        "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
        "metadata": {"user_id": "u"},
    }


def test_body_translation_keeps_client_version_and_merges_betas() -> None:
    """A client anthropic_version wins; anthropic-beta header flags join anthropic_beta."""
    body = {"anthropic_version": "custom", "anthropic_beta": ["a"], "max_tokens": 1}
    out = bedrock_body(body, ["a", "b"])
    assert out == {"anthropic_version": "custom", "anthropic_beta": ["a", "b"], "max_tokens": 1}


# AWS error types as they come: with a documentation URL after a colon, and namespace-qualified.
_WITH_DOC_URL = "ValidationException:http://internal.amazon.com/coral/"
_QUALIFIED = "com.amazon.coral.service#MissingAuthenticationTokenException"


def test_beta_flags_from_headers() -> None:
    """anthropic-beta is read case-insensitively, comma-split, from repeated headers too."""
    headers = [("Anthropic-Beta", "x-1, y-2"), ("anthropic-beta", "z-3"), ("x-api-key", "k")]
    assert beta_flags(headers) == ["x-1", "y-2", "z-3"]
    assert beta_flags({"content-type": "application/json"}) == []


@pytest.mark.parametrize(
    ("aws_type", "status", "expected"),
    [
        ("ThrottlingException", 429, ("rate_limit_error", 429)),
        ("ServiceQuotaExceededException", 400, ("rate_limit_error", 429)),
        (_WITH_DOC_URL, 400, ("invalid_request_error", 400)),
        ("AccessDeniedException", 403, ("permission_error", 403)),
        ("UnrecognizedClientException", 403, ("authentication_error", 401)),
        ("InvalidSignatureException", 403, ("authentication_error", 401)),
        ("ExpiredTokenException", 403, ("authentication_error", 401)),
        (_QUALIFIED, 403, ("authentication_error", 401)),
        ("ResourceNotFoundException", 404, ("not_found_error", 404)),
        ("ModelNotReadyException", 429, ("overloaded_error", 529)),
        ("ServiceUnavailableException", 503, ("overloaded_error", 503)),
        ("ModelTimeoutException", 408, ("timeout_error", 504)),
        ("InternalServerException", 500, ("api_error", 500)),
        ("modelStreamErrorException", 424, ("api_error", 500)),
        ("throttlingException", 500, ("rate_limit_error", 429)),
        ("SomethingNewException", 502, ("api_error", 502)),
        (None, 413, ("request_too_large", 413)),
        (None, 400, ("invalid_request_error", 400)),
        ("", 418, ("api_error", 418)),
    ],
)
def test_error_mapping_table(aws_type: str | None, status: int, expected: tuple[str, int]) -> None:
    """AWS error names (header or event forms) map to Anthropic error types and statuses."""
    assert map_error(aws_type, status) == expected


def test_config_endpoint_defaults_from_the_region() -> None:
    """The endpoint defaults from the region; a given base URL wins, without its slash."""
    cfg = BedrockConfig(region="eu-west-3")
    assert cfg.endpoint == "https://bedrock-runtime.eu-west-3.amazonaws.com"
    assert not cfg.has_static_credentials
    assert BedrockConfig(region="us-east-1", base_url="http://proxy:8080/b/").endpoint == (
        "http://proxy:8080/b"
    )


def test_config_from_snapshot_settings_takes_them_as_they_are() -> None:
    """Snapshot settings build a config as sent: the config service filled in the defaults."""
    settings = provider_pb2.BedrockSettings(
        region="ap-south-1",
        model="m-large",
        small_fast_model="m-small",
        access_key="AKIAFROMSNAPSHOT0001",
        access_key_secret="shh-secret-value-123",
    )
    url = "https://bedrock-runtime.ap-south-1.amazonaws.com"
    cfg = BedrockConfig.from_settings(url, settings)
    assert (cfg.region, cfg.model, cfg.small_fast_model) == ("ap-south-1", "m-large", "m-small")
    assert cfg.endpoint == url
    assert cfg.access_key == Secret("AKIAFROMSNAPSHOT0001")
    assert "shh-secret-value-123" not in repr(cfg)
    cfg = BedrockConfig.from_settings(url, provider_pb2.BedrockSettings(role_arn="arn:r"))
    assert (cfg.role_arn, cfg.access_key) == ("arn:r", None)
    # The bridge's own AWS_REGION setting serves only a snapshot that sent no region.
    cfg = BedrockConfig.from_settings(url, provider_pb2.BedrockSettings(), "eu-north-1")
    assert cfg.region == "eu-north-1"
