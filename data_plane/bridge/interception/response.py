"""What an answer says about itself, read on the side while it is relayed: token usage,
the model that served it, the tool calls the model made, why it finished (the telemetry's
gen_ai.response.finish_reasons: chat `finish_reason`s, Anthropic's `stop_reason`, the
Responses status), and whether it reached its end.

Nothing here touches the relayed bytes, and nothing here raises: a malformed, compressed
or huge answer simply yields less. Memory stays bounded per answer: a blocking JSON body
is kept up to MAX_JSON_BODY, an SSE stream only up to one line (MAX_SSE_LINE) at a time,
tool-call arguments up to MAX_ARGUMENTS_TOTAL.

SSE is not parsed event by event. A block of complete lines is scanned for a few
markers (C-speed substring tests) and only the `data:` lines that can carry what is
wanted are parsed: usage (OpenAI's last chat chunk with `stream_options.include_usage`,
`response.completed`; Anthropic's `message_start` and `message_delta`, whose counts are
cumulative, so later values replace earlier ones), tool calls (chat `tool_calls` deltas;
Anthropic `tool_use` blocks and, with arguments wanted, their `input_json_delta`s;
Responses' `response.completed` output). The served model of a stream whose events
carry no usage is read from the first `data:` line with a regular expression.

The end of an answer: chat `data: [DONE]`, Anthropic `message_stop`, Responses
`response.completed` / `response.incomplete` (`response.failed` and an `error` event
mark the answer failed). A client that hangs up after the end still had a complete
answer.
"""

from __future__ import annotations

import json
import re
import zlib
from typing import Any

from aibridge import recording
from aibridge.logs import get_logger

log = get_logger(__name__)

MAX_JSON_BODY = 4 * 1024 * 1024  # blocking bodies larger than this are not parsed
MAX_SSE_LINE = 1024 * 1024  # longest partial SSE line kept while waiting for its newline
MAX_ARGUMENTS_TOTAL = 1024 * 1024  # characters of tool arguments kept per answer

# Which lines of a block hold anything worth a parse? (Anthropic's argument deltas only when
# arguments are kept.) `MARKERS` is the rule, tried per line; `marked_lines` first picks the
# few lines that can match with substring searches (C speed): the one alternation tried at
# every byte of every line was most of an SSE chunk's cost in the bridge.
MARKERS = (
    rb'usage" *: *\{|"tool_calls"|"tool_use"|"server_tool_use"|\[DONE\]'
    rb"|message_stop|response\.(?:completed|incomplete|failed)|^event: *error"
    rb'|"(?:finish|stop)_reason" *: *"'
)
ARGUMENT_MARKER = b"input_json_delta"
_WANTED = re.compile(MARKERS, re.MULTILINE)  # per marked line
_WANTED_ARGUMENTS = re.compile(MARKERS + b"|" + ARGUMENT_MARKER, re.MULTILINE)
_USAGE = re.compile(rb'usage" *: *\{')
_REASON = re.compile(rb'_reason" *: *"')


# Literals of which every line the reader acts on holds one (with the `_REASON` matches):
# the lines around them are the only ones given the per-line rule.
_LITERALS = (b'usage"', b"tool_", b"[DONE]", b"message_stop", b"response.", b"error")


def marked_lines(lines: bytes, arguments: bool) -> list[bytes]:
    """The lines of `lines` (whole lines) that may match MARKERS or be an error event, in
    order: every line holding one of the markers' literals. A block worth reading is
    mostly lines that are not (the deltas around a usage or tool-call event); each of
    those would cost a regex search of its own."""
    hits: list[int] = []
    for literal in (*_LITERALS, ARGUMENT_MARKER) if arguments else _LITERALS:
        at = lines.find(literal)
        while at >= 0:
            hits.append(at)
            at = lines.find(literal, at + len(literal))
    hits += [found.start() for found in _REASON.finditer(lines)]
    if not hits:
        return []
    starts = sorted({lines.rfind(b"\n", 0, at) + 1 for at in hits})
    out: list[bytes] = []
    for start in starts:
        end = lines.find(b"\n", start)
        # Between two newlines: a lone CR may still end lines inside.
        out += lines[start : end if end >= 0 else len(lines)].splitlines()
    return out


_MODEL = re.compile(rb'"model" *: *"([^"\\]{1,200})"')
_TERMINAL_TYPES = frozenset({"message_stop", "response.completed", "response.incomplete"})
_FAILED_TYPES = frozenset({"response.failed", "error"})
_RESPONSES_TOOLS = frozenset({"function_call", "custom_tool_call", "local_shell_call"})
_ANTHROPIC_TOOLS = frozenset({"tool_use", "server_tool_use"})
MAX_REASONS = 16  # distinct finish reasons kept (one per choice at most)
MAX_REASON = 64  # characters of one
_RESPONSE_ENDS = frozenset({"completed", "incomplete", "failed"})


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _usage(usage: dict[str, Any], out: dict[str, int], ordered: list[int]) -> None:
    """Token counts of an OpenAI or Anthropic usage object, by TokenUsage's kind names,
    each within 0..MAX_TOKEN_COUNT; also in `ordered`, by TokenUsage's order (as the
    record takes them: no lookup per kind there)."""

    def put(index: int, kind: str, value: Any) -> None:
        count = _count(value)
        if count is not None:
            out[kind] = ordered[index] = min(count, recording.MAX_TOKEN_COUNT) if count > 0 else 0

    put(0, "input", usage.get("prompt_tokens", usage.get("input_tokens")))
    put(1, "output", usage.get("completion_tokens", usage.get("output_tokens")))
    put(3, "cache_write", usage.get("cache_creation_input_tokens"))
    cached = usage.get("cache_read_input_tokens")
    for details in ("prompt_tokens_details", "input_tokens_details"):
        section = usage.get(details)
        if cached is None and isinstance(section, dict):
            cached = section.get("cached_tokens")
    put(2, "cache_read", cached)
    for details in ("completion_tokens_details", "output_tokens_details"):
        section = usage.get(details)
        if isinstance(section, dict):
            put(4, "reasoning", section.get("reasoning_tokens"))


class _Tool:
    __slots__ = ("call_id", "name", "parts", "size")

    def __init__(self, name: str, call_id: str) -> None:
        self.name = name
        self.call_id = call_id
        self.parts: list[str] = []
        self.size = 0


class ResponseReader:
    """Feed it the response chunks as relayed, then `finish()`; read the attributes."""

    def __init__(self, sse: bool, content_encoding: str | None, arguments: bool = False) -> None:
        self.sse = sse
        self.encoding = (content_encoding or "identity").lower()
        self.arguments = arguments  # keep tool-call arguments (prompt recording on)
        self.tokens: dict[str, int] = {}
        # The same counts in TokenUsage's order (input, output, cache read, cache write,
        # reasoning), 0 for a kind not reported: what the record takes.
        self.counts = [0, 0, 0, 0, 0]
        self.model = ""
        self.terminal = False  # the answer reached its end
        self.failed = False  # the answer says it failed (an error event, response.failed)
        self.finish_reasons: list[str] = []  # distinct, in the order they came
        self.tools: dict[tuple[int, int] | str, _Tool] = {}
        self._argument_chars = 0
        self._buf = bytearray()
        self._overflow = False
        self._first_data = True
        self.finished = False
        self._wanted = _WANTED_ARGUMENTS if arguments else _WANTED
        # A compressed stream is relayed untouched and not inspected.
        self._off = sse and self.encoding != "identity"

    @property
    def tool_calls(self) -> list[tuple[str, str, str]]:
        """(name, call id, JSON arguments) of each tool call, in the order they began."""
        return [(t.name, t.call_id, "".join(t.parts)) for t in self.tools.values()]

    def feed(self, chunk: bytes) -> None:
        if self._off or self.finished:
            return
        if not self.sse:
            if not self._overflow:
                self._buf += chunk
                self._overflow = len(self._buf) > MAX_JSON_BODY
            return
        if not self._buf and chunk.endswith(b"\n"):
            lines = chunk  # whole lines, the usual case: no copy through the buffer
        else:
            self._buf += chunk
            end = self._buf.rfind(b"\n")
            if end < 0:
                if len(self._buf) > MAX_SSE_LINE:
                    self._buf.clear()  # no line end in sight: not an SSE line worth reading
                return
            lines = bytes(self._buf[: end + 1])
            del self._buf[: end + 1]
        if self._first_data and not self.model:
            self._first_model(lines)
        marked = marked_lines(lines, self.arguments)
        if not marked:
            return
        try:
            self._lines(marked)
        except Exception:  # a reader bug must never reach the relay: stop reading
            log.exception("reading an answer for its record failed")
            self._off = True

    def finish(self) -> ResponseReader:
        """Read what is still buffered (a blocking body, a last line without newline);
        once: later calls change nothing."""
        if self._off or self.finished:
            return self
        if self.sse:
            self.feed(b"\n")
            self.finished = True
            return self
        self.finished = True
        if self._overflow or not self._buf:
            return self
        buffered = bytes(self._buf)
        self._buf = bytearray()
        try:
            body = self._decoded(buffered)
            if body is not None:
                self._document(json.loads(body))
                self.terminal = True
        except (ValueError, RecursionError, zlib.error):
            pass  # not JSON (or not whole): no usage, no tool calls
        except Exception:  # a reader bug must never reach the relay
            log.exception("reading an answer for its record failed")
        return self

    def _decoded(self, body: bytes) -> bytes | None:
        if self.encoding == "identity":
            return body
        if self.encoding not in ("gzip", "deflate"):
            return None
        inflate = zlib.decompressobj(47)  # 32+15: auto-detect a gzip or zlib header
        out = inflate.decompress(body, MAX_JSON_BODY)
        return None if inflate.unconsumed_tail else out  # no bomb gets inflated whole

    def _first_model(self, lines: bytes) -> None:
        start = lines.find(b"data:")
        if start < 0:
            return
        self._first_data = False
        found = _MODEL.search(lines, start, lines.find(b"\n", start))
        if found is not None:
            self.model = found.group(1).decode("utf-8", "replace")

    def _lines(self, lines: list[bytes]) -> None:
        for line in lines:
            if line.startswith(b"event:"):
                if line[6:].strip() == b"error":
                    self.failed = True
                continue
            found = self._wanted.search(line) if line.startswith(b"data:") else None
            if found is None:
                continue
            if (
                found[0] == b'"tool_calls"'
                and not self.arguments
                and b'"name"' not in line
                and _USAGE.search(line) is None
            ):
                continue  # a chat delta with more arguments only: nothing to keep
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.terminal = True
                continue
            try:
                doc = json.loads(payload)
            except (ValueError, RecursionError):
                continue
            if isinstance(doc, dict):
                self._event(doc)

    def _event(self, doc: dict[str, Any]) -> None:
        kind = doc.get("type")
        if kind in _TERMINAL_TYPES:
            self.terminal = True
        elif kind in _FAILED_TYPES:
            self.failed = self.terminal = True
        if kind == "content_block_start":
            self._anthropic_block(doc.get("index"), doc.get("content_block"), stream=True)
        elif kind == "content_block_delta":
            delta = doc.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "input_json_delta":
                self._argument(_block_key(doc.get("index")), delta.get("partial_json"))
        elif kind == "message_delta" and isinstance(doc.get("delta"), dict):
            self._reason(doc["delta"].get("stop_reason"))
        elif isinstance(doc.get("choices"), list):
            self._chat(doc["choices"], stream=True)
        self._holders(doc)

    def _document(self, doc: Any) -> None:
        """A whole blocking answer: chat completion, Responses object or Anthropic message."""
        if not isinstance(doc, dict):
            return
        if isinstance(doc.get("choices"), list):
            self._chat(doc["choices"], stream=False)
        if doc.get("type") == "message" and isinstance(doc.get("content"), list):
            for index, block in enumerate(doc["content"]):
                self._anthropic_block(index, block, stream=False)
        self._holders(doc)

    def _holders(self, doc: dict[str, Any]) -> None:
        """Usage, model and Responses output of the event itself or the object it wraps."""
        for holder in (doc, doc.get("message"), doc.get("response")):
            if not isinstance(holder, dict):
                continue
            if isinstance(holder.get("usage"), dict):
                _usage(holder["usage"], self.tokens, self.counts)
            model = holder.get("model")
            if isinstance(model, str) and model:
                self.model = model
            self._reason(holder.get("stop_reason"))
            if holder.get("object") == "response":
                if holder.get("status") in _RESPONSE_ENDS:
                    details = holder.get("incomplete_details")
                    why = details.get("reason") if isinstance(details, dict) else None
                    self._reason(why or holder["status"])
                if isinstance(holder.get("output"), list):
                    self._responses_output(holder["output"])

    def _reason(self, value: Any) -> None:
        reasons = self.finish_reasons
        if isinstance(value, str) and value and len(reasons) < MAX_REASONS:
            value = value[:MAX_REASON]
            if value not in reasons:
                reasons.append(value)

    def _chat(self, choices: list[Any], *, stream: bool) -> None:
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            self._reason(choice.get("finish_reason"))
            message = choice.get("delta" if stream else "message")
            calls = message.get("tool_calls") if isinstance(message, dict) else None
            if not isinstance(calls, list):
                continue
            number = _count(choice.get("index")) or 0
            for position, call in enumerate(calls):
                if not isinstance(call, dict):
                    continue
                function = call.get("function")
                function = function if isinstance(function, dict) else {}
                index = _count(call.get("index")) if stream else position
                key = (number, index if index is not None else position)
                if key not in self.tools:
                    self._new(key, function.get("name"), call.get("id"))
                self._argument(key, function.get("arguments"))

    def _anthropic_block(self, index: Any, block: Any, *, stream: bool) -> None:
        if not isinstance(block, dict) or block.get("type") not in _ANTHROPIC_TOOLS:
            return
        key = _block_key(index)
        self._new(key, block.get("name"), block.get("id"))
        tool_input = block.get("input")
        if not stream and tool_input is not None and self.arguments:
            self._argument(key, json.dumps(tool_input, separators=(",", ":")))

    def _responses_output(self, output: list[Any]) -> None:
        for item in output:
            if not isinstance(item, dict) or item.get("type") not in _RESPONSES_TOOLS:
                continue
            call_id = item.get("call_id")
            key = call_id if isinstance(call_id, str) and call_id else f"#{len(self.tools)}"
            if key in self.tools:
                continue  # the same output seen twice (an output_item event, then completed)
            name = item.get("name") or ("local_shell" if item["type"] == "local_shell_call" else "")
            self._new(key, name, call_id)
            arguments = item.get("arguments", item.get("input", item.get("action")))
            if arguments is not None and not isinstance(arguments, str):
                arguments = json.dumps(arguments, separators=(",", ":"))
            self._argument(key, arguments)

    def _new(self, key: tuple[int, int] | str, name: Any, call_id: Any) -> None:
        if key in self.tools or len(self.tools) >= recording.MAX_TOOL_CALLS:
            return
        self.tools[key] = _Tool(
            name if isinstance(name, str) else "", call_id if isinstance(call_id, str) else ""
        )

    def _argument(self, key: tuple[int, int] | str, text: Any) -> None:
        if not self.arguments or not isinstance(text, str) or not text:
            return
        tool = self.tools.get(key)
        if tool is None:
            return
        room = min(
            MAX_ARGUMENTS_TOTAL - self._argument_chars,
            recording.MAX_ARGUMENTS - tool.size,
        )
        if room > 0:
            piece = text[:room]
            tool.parts.append(piece)
            tool.size += len(piece)
            self._argument_chars += len(piece)


def _block_key(index: Any) -> tuple[int, int]:
    """The key of an Anthropic content block (tool calls of chat choices use (choice, i))."""
    count = _count(index)
    return (-1, count if count is not None else -1)
