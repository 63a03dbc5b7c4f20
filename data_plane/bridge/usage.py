"""Token usage read on the side of a response, without touching the relayed bytes.

SSE: only `data:` lines that mention "usage" are parsed (OpenAI's final chunk or
`response.completed`; Anthropic's `message_start` and `message_delta`, whose output
count is cumulative, so later values replace earlier ones). JSON: the top-level usage.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

MAX_JSON_BODY = 4 * 1024 * 1024  # blocking bodies larger than this are not parsed


def _ints(usage: dict[str, Any], out: dict[str, int]) -> None:
    def put(kind: str, value: Any) -> None:
        if isinstance(value, int) and not isinstance(value, bool):
            out[kind] = value

    put("input", usage.get("prompt_tokens", usage.get("input_tokens")))
    put("output", usage.get("completion_tokens", usage.get("output_tokens")))
    put("cache_write", usage.get("cache_creation_input_tokens"))
    cached = usage.get("cache_read_input_tokens")
    for details in ("prompt_tokens_details", "input_tokens_details"):
        section = usage.get(details)
        if cached is None and isinstance(section, dict):
            cached = section.get("cached_tokens")
    put("cache_read", cached)


def _from_event(doc: Any, out: dict[str, int]) -> None:
    if not isinstance(doc, dict):
        return
    for holder in (doc, doc.get("message"), doc.get("response")):
        if isinstance(holder, dict) and isinstance(holder.get("usage"), dict):
            _ints(holder["usage"], out)


# Longest partial SSE line kept while waiting for its newline.
MAX_SSE_LINE = 1024 * 1024


class UsageReader:
    """Feed it the response chunks; `tokens` holds what was found (input/output/...)."""

    def __init__(self, sse: bool, content_encoding: str | None) -> None:
        self.sse = sse
        self.encoding = (content_encoding or "identity").lower()
        self.tokens: dict[str, int] = {}
        self._buf = bytearray()
        self._overflow = False

    def feed(self, chunk: bytes) -> None:
        if self.encoding != "identity" and self.sse:
            return  # compressed streams are relayed untouched and not inspected
        if not self.sse:
            if not self._overflow:
                self._buf += chunk
                self._overflow = len(self._buf) > MAX_JSON_BODY
            return
        self._buf += chunk
        end = self._buf.rfind(b"\n")
        if end < 0:
            if len(self._buf) > MAX_SSE_LINE:
                self._buf.clear()  # no line end in sight: not an SSE line worth reading
            return
        lines = bytes(self._buf[: end + 1])
        del self._buf[: end + 1]
        if b"usage" not in lines:
            return
        for line in lines.splitlines():
            if line.startswith(b"data:") and b"usage" in line:
                try:
                    _from_event(json.loads(line[5:]), self.tokens)
                except (ValueError, RecursionError):
                    continue

    def finish(self) -> dict[str, int]:
        if self.sse:
            self.feed(b"\n")
            return self.tokens
        if self._overflow or not self._buf:
            return self.tokens
        body = bytes(self._buf)
        try:
            if self.encoding in ("gzip", "deflate"):
                body = zlib.decompress(body, 47)  # 32+15: auto-detect gzip/zlib header
            elif self.encoding != "identity":
                return self.tokens
            _from_event(json.loads(body), self.tokens)
        except (ValueError, RecursionError, zlib.error):
            pass
        return self.tokens
