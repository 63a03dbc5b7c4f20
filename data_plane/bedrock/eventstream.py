"""Bedrock `application/vnd.amazon.eventstream` → Anthropic SSE, incrementally.

Bytes go in as they arrive from the network (any split), whole SSE events come out. Each
`chunk` event carries JSON `{"bytes": <base64>}` whose decoded JSON is an Anthropic stream
event; it is relayed as `event: <type>\\ndata: <json>\\n\\n` with the JSON bytes exactly as
Bedrock produced them, except that Bedrock's `amazon-bedrock-invocationMetrics` is taken out
(and kept on the decoder). An exception or error message becomes one Anthropic `event: error`
and ends the stream.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from botocore.eventstream import EventStreamBuffer, ParserError

from data_plane.bedrock.translate import dumps, error_body, error_message, map_error, sse_event

METRICS_KEY = "amazon-bedrock-invocationMetrics"


class EventStreamTranslator:
    """Feed raw event-stream bytes, get Anthropic SSE events; usage read on the side."""

    def __init__(self) -> None:
        self._buffer: Any = EventStreamBuffer()
        self.done = False
        self.error: dict[str, Any] | None = None  # the Anthropic error body, once sent
        self.usage: dict[str, Any] = {}
        self.invocation_metrics: dict[str, Any] | None = None
        self.stop_reason: str | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """SSE events completed by `data` (empty once the stream is done)."""
        if self.done:
            return []
        self._buffer.add_data(data)
        out: list[bytes] = []
        try:
            for message in self._buffer:
                event = self._translate(message.headers, message.payload)
                if event is not None:
                    out.append(event)
                if self.done:
                    break
        except (ParserError, ValueError) as exc:  # CRC mismatch, bad lengths or headers
            out.append(self.fail("api_error", f"malformed Bedrock event stream: {exc}"))
        return out

    def fail(self, error_type: str, message: str) -> bytes:
        """End the stream with an Anthropic SSE error event."""
        self.done = True
        self.error = error_body(error_type, message)
        return sse_event("error", dumps(self.error))

    def _translate(self, headers: dict[str, Any], payload: bytes) -> bytes | None:
        kind = headers.get(":message-type")
        if kind == "exception":
            aws_type = str(headers.get(":exception-type", ""))
            error_type, _ = map_error(aws_type, 500)
            return self.fail(error_type, error_message(payload, aws_type or "Bedrock exception"))
        if kind == "error":
            code = str(headers.get(":error-code", ""))
            error_type, _ = map_error(code, 500)
            return self.fail(error_type, str(headers.get(":error-message") or code or "error"))
        if kind != "event" or headers.get(":event-type") != "chunk":
            return None  # unknown / initial-response events carry nothing for the client
        try:
            raw = base64.b64decode(json.loads(payload)["bytes"], validate=True)
            event = json.loads(raw)
            event_type = event["type"]
            if not isinstance(event_type, str) or not event_type:
                raise TypeError("event type is not a string")
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            return self.fail("api_error", f"undecodable Bedrock stream chunk: {exc}")
        if METRICS_KEY in event:
            self.invocation_metrics = event.pop(METRICS_KEY)
            raw = dumps(event)
        elif b"\n" in raw or b"\r" in raw:
            raw = dumps(event)  # one SSE data line per event
        self._observe(event_type, event)
        if event_type == "error":
            self.done = True
            self.error = event
        return sse_event(event_type, raw)

    def _observe(self, event_type: str, event: dict[str, Any]) -> None:
        if event_type == "message_start":
            message = event.get("message")
            if isinstance(message, dict) and isinstance(message.get("usage"), dict):
                self.usage.update(message["usage"])
        elif event_type == "message_delta":
            if isinstance(event.get("usage"), dict):
                self.usage.update(event["usage"])
            delta = event.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self.stop_reason = delta["stop_reason"]
        elif event_type == "message_stop":
            self.done = True
