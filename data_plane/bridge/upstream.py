"""What the bridge forwards to: an HTTP upstream (httpx) or a plug-in upstream (Bedrock).

The seam for Bedrock is `BedrockFactory`: given a snapshot provider and the shared
httpx client it returns an `AnthropicUpstream` (an object answering Anthropic Messages
requests with Anthropic JSON or SSE), or raises `ValueError` to refuse the provider's
settings (it is then left out and reported in the ACK/NACK). `bedrock_adapter.py`
provides the default one over `data_plane.bedrock.BedrockClient`; without that package
Bedrock-backed providers fail to build with "bedrock support not available".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx

from aibridge.config.v1 import provider_pb2
from data_plane.transport.models import Sink

BEDROCK_UNAVAILABLE = "bedrock support not available"


async def _no_close() -> None:
    return None


@dataclass
class UpstreamResponse:
    """Status, raw headers and the body as it arrives; `aclose` releases the connection."""

    status: int
    headers: list[tuple[bytes, bytes]]
    chunks: AsyncIterator[bytes]
    aclose: Callable[[], Awaitable[None]] = _no_close
    served_model: str = ""  # the model that answered, when the upstream says so aside
    # The body handed to a sink from the connection's read callback instead (Reply.relay).
    relay: Callable[[Sink], Awaitable[None]] | None = None

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value.decode("latin-1")
        return None


class AnthropicUpstream(Protocol):
    """An upstream that speaks the Anthropic Messages API on behalf of the bridge."""

    # The masked hint of the provider's own credentials ("" when resolved at run time).
    credential_hint: str

    async def send(
        self, *, path: str, body: bytes, headers: Mapping[str, str], stream: bool
    ) -> UpstreamResponse:
        """Send one Anthropic-format request (path such as /v1/messages)."""
        ...


BedrockFactory = Callable[[provider_pb2.Provider, httpx.AsyncClient], AnthropicUpstream]
