"""One interception as the bridge sees it happen, and the record it becomes.

`Capture` is made when a provider request arrives and filled in as it is served (the
app: provider, route, principal, request facts; the forwarder: credential, attempts,
refusals, the response reader); `bind` wraps the ASGI `send` so that every answer
carries `X-AIBridge-Request-Id` and the status and first-byte time are seen whoever
answers. `build` turns it into a `usage_pb2.Interception` once the request is over.

Outcome, in order: refused by the breaker or the pool (set by the forwarder); an
answer of the gateway's own (never relayed from the upstream): gateway error with its
status, or cancelled when nothing was sent; a relayed answer: upstream error when its
status is >= 400 or the stream broke or said it failed, completed when it was sent
whole or reached its terminal event (a client that hangs up right after the last
event, as Codex does, still had its whole answer), else cancelled.

Every string is made fit for the config service before it leaves (`line`, `content`):
cut to its limit in `aibridge.recording`, control and format characters replaced, no
NUL, valid UTF-8; so one odd header never gets a batch refused. The secrets the bridge
knows a request by (the gateway token presented, the client's own key, the pooled key
used) are masked wherever they appear in the record's text.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp

from aibridge import recording
from aibridge.config.v1 import usage_pb2
from aibridge.masking import mask_secret
from aibridge.rulebook import TYPES
from data_plane.bridge.asgi import Message, Send
from data_plane.bridge.interception.clients import detect, session_from_headers
from data_plane.bridge.interception.response import ResponseReader

if TYPE_CHECKING:
    from data_plane.gateway_auth import Principal

REQUEST_ID = b"x-aibridge-request-id"
VIA = b"x-aibridge-via"  # "proxy": the request came through aibridgeproxyd
MAX_ID = 36
MAX_TOKEN_COUNT = 2**53
_REPLACEMENT = "\ufffd"
_UUID7 = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")
Outcome = usage_pb2.Outcome


def line(value: str, limit: int) -> str:
    """A single-line field: at most `limit` characters, each printable."""
    value = value[:limit]
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else _REPLACEMENT for c in value)


def content(value: str, limit: int) -> str:
    """Free text (a prompt, tool arguments): at most `limit` characters, no NUL, UTF-8."""
    value = value[:limit].replace("\x00", _REPLACEMENT)
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate from a JSON \ud800 escape
        value = value.encode("utf-8", "replace").decode()
    return value


def _ts(ns: int) -> Timestamp:
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


class RequestIds:
    """Each request's id: a new UUIDv7, or the proxy's own when it sent one fit to keep.

    The proxy's id is kept so its log line and the record share it. It must be a
    canonical UUIDv7 minted within WINDOW of now and not already used: the bridge cannot
    tell the proxy from a client that forges its headers, and records are idempotent by
    id, so a replayed id would make the config service drop a record as a duplicate.
    Ids kept are remembered for WINDOW (at most MAX_RECENT of them).
    """

    WINDOW_MS = 60_000
    MAX_RECENT = 65_536

    def __init__(self) -> None:
        self._recent: OrderedDict[bytes, int] = OrderedDict()

    def take(self, proposed: bytes | None, now_ns: int) -> str:
        if proposed is not None and self._fit(proposed, now_ns // 1_000_000):
            return proposed.decode()
        return recording.new_record_id(now_ns)

    def _fit(self, proposed: bytes, now_ms: int) -> bool:
        if not _UUID7.match(proposed) or proposed in self._recent:
            return False
        minted = int(proposed[:8] + proposed[9:13], 16)
        if abs(now_ms - minted) > self.WINDOW_MS:
            return False
        recent = self._recent
        while recent and (
            len(recent) >= self.MAX_RECENT or next(iter(recent.values())) < now_ms - self.WINDOW_MS
        ):
            recent.popitem(last=False)
        recent[proposed] = now_ms
        return True


class Capture:
    """What is known of one interception so far (see the module docstring)."""

    __slots__ = (
        "answered",
        "arguments",
        "attempts",
        "broken",
        "client",
        "credential_hint",
        "credential_kind",
        "first_byte_ns",
        "id",
        "principal",
        "prompt",
        "provider_name",
        "provider_type",
        "proxied",
        "reader",
        "refused",
        "relayed",
        "requested_model",
        "route",
        "secrets",
        "session_id",
        "started_ns",
        "status",
        "streamed",
        "user_agent",
    )

    def __init__(self, record_id: str, started_ns: int, headers: dict[bytes, bytes]) -> None:
        self.id = record_id
        self.started_ns = started_ns
        self.proxied = headers.get(VIA) == b"proxy"
        self.client = detect(headers)
        self.user_agent = headers.get(b"user-agent", b"").decode("utf-8", "replace")
        session = session_from_headers(headers)
        self.session_id = session.decode("utf-8", "replace") if session else ""
        self.first_byte_ns = 0
        self.status = 0
        self.answered = False  # the last byte of an answer was sent
        self.provider_name = ""
        self.provider_type = 0
        self.route = ""
        self.requested_model = ""
        self.principal: Principal | None = None
        self.credential_kind = 0
        self.credential_hint = ""
        self.attempts = 0
        self.refused = 0  # OUTCOME_REFUSED_*: no upstream call was made
        self.relayed = False  # the answer is the upstream's, relayed
        self.broken = False  # the upstream's stream broke after it started
        self.reader: ResponseReader | None = None
        self.prompt = ""
        self.streamed = False
        self.secrets: list[str] = []
        self.arguments = False  # keep tool-call arguments (prompt recording is on)

    def provider(self, name: str, type_name: str) -> None:
        self.provider_name = name
        known = TYPES.get(type_name)
        self.provider_type = known.wire if known is not None else 0

    def bind(self, send: Send) -> Send:
        """`send` that stamps the request id on the answer and notes how it went."""
        header = (REQUEST_ID, self.id.encode())

        async def stamped(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.body":
                if not self.first_byte_ns and message.get("body"):
                    self.first_byte_ns = time.time_ns()
                if not message.get("more_body", False):
                    self.answered = True
            elif kind == "http.response.start":
                self.status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        return stamped

    def outcome(self) -> int:
        if self.refused:
            return self.refused
        if not self.relayed:
            return Outcome.OUTCOME_GATEWAY_ERROR if self.status else Outcome.OUTCOME_CANCELLED
        reader = self.reader
        if self.status >= 400 or self.broken or (reader is not None and reader.failed):
            return Outcome.OUTCOME_UPSTREAM_ERROR
        if self.answered or (reader is not None and reader.terminal):
            return Outcome.OUTCOME_COMPLETED
        return Outcome.OUTCOME_CANCELLED

    def build(self, ended_ns: int | None = None) -> usage_pb2.Interception:
        """The record, every string within its limit and clear of known secrets."""
        ended = time.time_ns() if ended_ns is None else ended_ns
        principal = self.principal
        reader = self.reader
        one, free = self._line, self._content
        name = recording.MAX_NAME
        record = usage_pb2.Interception(
            id=self.id,
            started_at=_ts(self.started_ns),
            ended_at=_ts(max(ended, self.started_ns, self.first_byte_ns)),
            provider_name=line(self.provider_name, name),
            provider_type=self.provider_type,  # type: ignore[arg-type]
            route=one(self.route, recording.MAX_ROUTE),
            requested_model=one(self.requested_model, name),
            served_model=one(reader.model, name) if reader is not None else "",
            outcome=self.outcome(),  # type: ignore[arg-type]
            status_code=self.status,
            principal_id=line(principal.principal_id, MAX_ID) if principal else "",
            principal_name=line(principal.principal_name, name) if principal else "",
            token_id=line(principal.token_id, MAX_ID) if principal else "",
            client=self.client,
            user_agent=one(self.user_agent, recording.MAX_USER_AGENT),
            session_id=one(self.session_id, name),
            credential_kind=self.credential_kind,  # type: ignore[arg-type]
            credential_hint=line(self.credential_hint, recording.MAX_HINT),
            attempts=self.attempts,
            prompt=free(self.prompt, recording.MAX_PROMPT),
            proxied=self.proxied,
            streamed=self.streamed,
        )
        if self.first_byte_ns:
            record.first_byte_at.CopyFrom(_ts(self.first_byte_ns))
        if reader is not None:
            usage = record.usage
            for kind, count in reader.tokens.items():
                setattr(usage, f"{kind}_tokens", min(max(count, 0), MAX_TOKEN_COUNT))
            for tool, call_id, arguments in reader.tool_calls[: recording.MAX_TOOL_CALLS]:
                record.tool_calls.add(
                    name=one(tool, name),
                    call_id=one(call_id, name),
                    arguments=free(arguments, recording.MAX_ARGUMENTS),
                )
        return record

    def _line(self, value: str, limit: int) -> str:
        return line(self._redact(value, limit), limit)

    def _content(self, value: str, limit: int) -> str:
        return content(self._redact(value, limit), limit)

    def _redact(self, value: str, limit: int) -> str:
        """`value` cut near `limit` (a secret across the cut still seen), secrets masked."""
        value = value[: limit + max(map(len, self.secrets), default=0)]
        for secret in self.secrets:
            if secret and secret in value:
                value = value.replace(secret, mask_secret(secret))
        return value
