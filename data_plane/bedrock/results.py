"""What `BedrockClient` returns: a whole response, or a stream with status known up front."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from data_plane.bedrock.eventstream import EventStreamTranslator
from data_plane.bedrock.translate import dumps


@dataclass(frozen=True)
class UpstreamResult:
    """A whole (non-streaming) response, already in the Anthropic format."""

    status: int
    headers: dict[str, str]
    body: bytes
    model_id: str
    invocation_metrics: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200


class BedrockStream:
    """A streaming response: status and headers first, then the body bytes when iterated.

    On success (`status == 200`) iteration yields Anthropic SSE, one event per bytes object.
    On an upstream error it yields one Anthropic error JSON body (status/headers say so).
    Iterate at most once; `aclose()` (or `async with`) closes the upstream response, and so
    does stopping, cancelling or finishing the iteration.
    """

    def __init__(
        self,
        *,
        status: int,
        headers: dict[str, str],
        model_id: str,
        response: httpx.Response | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.model_id = model_id
        self._response = response
        self._translator = EventStreamTranslator()
        self._error = error
        self._gen: AsyncGenerator[bytes, None] | None = None
        self._closed = False

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def error(self) -> dict[str, Any] | None:
        """The Anthropic error body sent (as the response or as an SSE error event), if any."""
        return self._error or self._translator.error

    @property
    def usage(self) -> dict[str, Any]:
        """Anthropic usage seen so far (message_start, then message_delta updates)."""
        return self._translator.usage

    @property
    def invocation_metrics(self) -> dict[str, Any] | None:
        """Bedrock's `amazon-bedrock-invocationMetrics` (taken out of the relayed stream)."""
        return self._translator.invocation_metrics

    @property
    def stop_reason(self) -> str | None:
        return self._translator.stop_reason

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._gen is not None or self._closed:
            raise RuntimeError("a BedrockStream can be iterated only once, and not once closed")
        self._gen = self._iterate()
        return self._gen

    async def _iterate(self) -> AsyncGenerator[bytes, None]:
        if self._response is None:
            if self._error is not None:
                yield dumps(self._error)
            return
        translator = self._translator
        try:
            try:
                async for chunk in self._response.aiter_bytes():
                    for event in translator.feed(chunk):
                        yield event
                    if translator.done:
                        break
            except httpx.HTTPError as exc:
                message = f"Bedrock stream interrupted: {type(exc).__name__}"
                yield translator.fail("api_error", message)
            if not translator.done:
                yield translator.fail("api_error", "Bedrock stream ended before message_stop")
        finally:
            await self._response.aclose()

    async def aclose(self) -> None:
        """Close the upstream response (idempotent; safe before, during or after iteration).

        To stop a relay running in another task, cancelling that task is the clean way (the
        iteration closes the upstream as it unwinds); `aclose()` from elsewhere still closes
        the connection, and the other task's next read fails.
        """
        self._closed = True
        if self._gen is not None:
            with contextlib.suppress(RuntimeError):  # "already running" in another task
                await self._gen.aclose()
        if self._response is not None:
            await self._response.aclose()

    async def __aenter__(self) -> BedrockStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
