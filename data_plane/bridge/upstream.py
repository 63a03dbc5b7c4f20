"""What the bridge forwards to: an HTTP upstream (httpx) or a plug-in upstream (Bedrock).

The seam for Bedrock: `data_plane.bedrock` provides

    def build_upstream(config: BedrockConfig, http: httpx.AsyncClient) -> AnthropicUpstream

where the returned object takes an Anthropic Messages request (JSON body) and answers
with Anthropic JSON or Anthropic SSE bytes as an `UpstreamResponse`. It may raise
`ValueError` to refuse a configuration (the provider is then left out and reported).
Until that module exists, Bedrock-backed providers fail to build with
"bedrock support not available".
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from aibridge.masking import Secret

BEDROCK_UNAVAILABLE = "bedrock support not available"


@dataclass(frozen=True)
class BedrockConfig:
    """A provider's Bedrock settings from the snapshot (credentials masked in repr)."""

    base_url: str
    region: str
    model: str
    small_fast_model: str
    role_arn: str
    access_key: Secret = field(default_factory=lambda: Secret(""))
    access_key_secret: Secret = field(default_factory=lambda: Secret(""))


async def _no_close() -> None:
    return None


@dataclass
class UpstreamResponse:
    """Status, raw headers and the body as it arrives; `aclose` releases the connection."""

    status: int
    headers: list[tuple[bytes, bytes]]
    chunks: AsyncIterator[bytes]
    aclose: Callable[[], Awaitable[None]] = _no_close

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value.decode("latin-1")
        return None


class AnthropicUpstream(Protocol):
    """An upstream that speaks the Anthropic Messages API on behalf of the bridge."""

    async def send(
        self, *, path: str, body: bytes, headers: Mapping[str, str], stream: bool
    ) -> UpstreamResponse:
        """Send one Anthropic-format request (path such as /v1/messages)."""
        ...


BedrockFactory = Callable[[BedrockConfig, httpx.AsyncClient], AnthropicUpstream]


def load_bedrock_factory() -> BedrockFactory | None:
    """`data_plane.bedrock.build_upstream` when that module is installed, else None."""
    try:
        module = importlib.import_module("data_plane.bedrock")
    except ImportError:
        return None
    factory = getattr(module, "build_upstream", None)
    return factory if callable(factory) else None


def from_httpx(response: httpx.Response) -> UpstreamResponse:
    """Wrap a streamed httpx response; its body is relayed raw (still encoded)."""
    return UpstreamResponse(
        status=response.status_code,
        headers=response.headers.raw,
        chunks=response.aiter_raw(),
        aclose=response.aclose,
    )
