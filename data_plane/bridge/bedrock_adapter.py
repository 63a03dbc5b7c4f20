"""Bedrock-backed providers: `data_plane.bedrock.BedrockClient` behind `AnthropicUpstream`.

Imported lazily: without the `data_plane.bedrock` package the factory is None and such
providers fail to build with "bedrock support not available".
"""

from __future__ import annotations

import importlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from aibridge.config.v1 import provider_pb2
from aibridge.masking import mask_secret
from aibridge.rulebook import Family
from data_plane.bridge.providers import error_body
from data_plane.bridge.upstream import AnthropicUpstream, BedrockFactory, UpstreamResponse


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


def _raw(headers: Mapping[str, str], body: bytes | None = None) -> list[tuple[bytes, bytes]]:
    raw = [
        (k.lower().encode("latin-1"), v.encode("latin-1"))
        for k, v in headers.items()
        if k.lower() != "content-length"
    ]
    if body is not None:
        raw.append((b"content-length", str(len(body)).encode()))
    return raw


class BedrockUpstream:
    """Adapts one provider's BedrockClient (invoke / stream) to `AnthropicUpstream`."""

    def __init__(self, client: Any) -> None:
        self.client = client
        config = client.config
        static = config.access_key if config.has_static_credentials else None
        self.credential_hint = mask_secret(static.value) if static is not None else ""

    async def send(
        self, *, path: str, body: bytes, headers: Mapping[str, str], stream: bool
    ) -> UpstreamResponse:
        try:
            doc = json.loads(body)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
            err = error_body(Family.ANTHROPIC, 400, "request body is not a JSON object")
            return UpstreamResponse(
                400, _raw({"content-type": "application/json"}, err), _once(err)
            )
        if stream:
            result = await self.client.stream(doc, headers.items())
            return UpstreamResponse(
                result.status, _raw(result.headers), aiter(result), result.aclose, result.model_id
            )
        whole = await self.client.invoke(doc, headers.items())
        return UpstreamResponse(
            whole.status,
            _raw(whole.headers, whole.body),
            _once(whole.body),
            served_model=whole.model_id,
        )


def load_factory(aws_region: str = "") -> BedrockFactory | None:
    """The factory over `data_plane.bedrock`, or None when that package is missing.

    `aws_region` (the bridge's AWS_REGION setting) is the region of a provider that
    names none, neither in its settings nor in its base URL."""
    try:
        bedrock = importlib.import_module("data_plane.bedrock")
    except ImportError:
        return None

    def build(provider: provider_pb2.Provider, http: httpx.AsyncClient) -> AnthropicUpstream:
        config = bedrock.BedrockConfig.from_settings(
            provider.base_url, provider.bedrock, aws_region
        )
        return BedrockUpstream(bedrock.BedrockClient(config, http))

    return build
