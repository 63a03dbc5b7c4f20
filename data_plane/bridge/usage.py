"""Token usage read on the side of a response, without touching the relayed bytes.

SSE: only `data:` lines that mention "usage" or a finish reason are parsed (OpenAI's
final chunk or `response.completed`; Anthropic's `message_start` and `message_delta`,
whose output count is cumulative, so later values replace earlier ones). JSON: the
top-level usage. The same documents give the model that answered and the finish
reasons (OpenAI's `finish_reason`s, Anthropic's `stop_reason`, the Responses API's
status), read for telemetry and records.
"""

from __future__ import annotations

import json
import re
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


MAX_NAME = 256  # characters of a model name or finish reason kept
MAX_REASONS = 16  # distinct finish reasons kept (one per choice at most)


def _name(value: Any) -> str | None:
    return value[:MAX_NAME] if isinstance(value, str) and value else None


class _Found:
    """What the documents of one response said besides usage."""

    __slots__ = ("model", "reasons")

    def __init__(self) -> None:
        self.model = ""
        self.reasons: list[str] = []

    def reason(self, value: Any) -> None:
        name = _name(value)
        if name is not None and name not in self.reasons and len(self.reasons) < MAX_REASONS:
            self.reasons.append(name)


def _from_event(doc: Any, out: dict[str, int], found: _Found) -> None:
    if not isinstance(doc, dict):
        return
    message, response = doc.get("message"), doc.get("response")
    for holder in (doc, message, response):
        if isinstance(holder, dict):
            if isinstance(holder.get("usage"), dict):
                _ints(holder["usage"], out)
            model = _name(holder.get("model"))
            if model is not None:
                found.model = model
            found.reason(holder.get("stop_reason"))
    choices = doc.get("choices")
    if isinstance(choices, list):
        for choice in choices[:MAX_REASONS]:
            if isinstance(choice, dict):
                found.reason(choice.get("finish_reason"))
    delta = doc.get("delta")
    if isinstance(delta, dict):
        found.reason(delta.get("stop_reason"))
    if isinstance(response, dict) and response.get("status") in ("completed", "incomplete"):
        found.reason(response.get("status"))


# Longest partial SSE line kept while waiting for its newline.
MAX_SSE_LINE = 1024 * 1024


# A finish reason that is given (not null): most stream chunks carry `"finish_reason":null`.
_REASON = re.compile(rb'"(?:finish|stop)_reason"\s*:\s*"')


def _worth_reading(text: bytes) -> bool:
    return b"usage" in text or _REASON.search(text) is not None


class UsageReader:
    """Feed it the response chunks; `tokens` holds what was found (input/output/...),
    `model` and `finish_reasons` what the response said of itself."""

    def __init__(self, sse: bool, content_encoding: str | None) -> None:
        self.sse = sse
        self.encoding = (content_encoding or "identity").lower()
        self.tokens: dict[str, int] = {}
        self._found = _Found()
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
        if not _worth_reading(lines):
            return
        for line in lines.splitlines():
            if line.startswith(b"data:") and _worth_reading(line):
                try:
                    _from_event(json.loads(line[5:]), self.tokens, self._found)
                except (ValueError, RecursionError):
                    continue

    @property
    def model(self) -> str:
        return self._found.model

    @property
    def finish_reasons(self) -> list[str]:
        return self._found.reasons

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
            _from_event(json.loads(body), self.tokens, self._found)
        except (ValueError, RecursionError, zlib.error):
            pass
        return self.tokens
