"""One interception as the bridge sees it happen, and the record it becomes.

`Capture` is made when a provider request arrives and filled in as it is served (the
app: provider, route, principal, request facts; the forwarder: credential, attempts,
refusals, the response reader); `bind` wraps the ASGI `send` so that every answer
carries `X-AIBridge-Request-Id` and the status and first-byte time are seen whoever
answers. Once the request is over, `end` stamps its end and the capture is final:
`SerializeToString` is its record on the wire, what the sink ships (at its own pace, off
the request path), and `build` the same record as a `usage_pb2.Interception` (for the
request's span).

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
_TOKEN_FIELDS = {kind.removesuffix("_tokens"): kind for kind in recording.TOKEN_KINDS}
_REPLACEMENT = "\ufffd"
# Serialized describing fields (`Capture.SerializeToString`), by what they were made of.
MAX_DESCRIBED = 4096
_DESCRIBED: dict[tuple[object, ...], bytes] = {}
_UUID7 = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")


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
        "ended_ns",
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
        "served_model",
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
        self.ended_ns = started_ns  # set by `end`
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
        self.served_model = ""  # what the upstream said aside (Bedrock: the model id invoked)
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

    # (The module's enum constants, not usage_pb2.Outcome.X: the enum wrapper's attribute
    # lookup costs microseconds.)
    def outcome(self) -> int:
        if self.refused:
            return self.refused
        if not self.relayed:
            return usage_pb2.OUTCOME_GATEWAY_ERROR if self.status else usage_pb2.OUTCOME_CANCELLED
        reader = self.reader
        if self.status >= 400 or self.broken or (reader is not None and reader.failed):
            return usage_pb2.OUTCOME_UPSTREAM_ERROR
        if self.answered or (reader is not None and reader.terminal):
            return usage_pb2.OUTCOME_COMPLETED
        return usage_pb2.OUTCOME_CANCELLED

    def end(self, ended_ns: int | None = None) -> None:
        """The request is over: its end time, and what its reader still holds read (a
        relay cut short, the client gone, did not finish it). Nothing changes after."""
        self.ended_ns = max(time.time_ns() if ended_ns is None else ended_ns, self.started_ns)
        if self.reader is not None:
            self.reader.finish()

    def build(self) -> usage_pb2.Interception:
        """The record (once `end` was called), every string within its limit and clear
        of known secrets."""
        texts = self._texts()
        record = self._described(texts)
        record.MergeFrom(self._happened())
        return record

    def SerializeToString(self) -> bytes:  # what usage_pb2.Interception says
        """`build().SerializeToString()`, made cheaply from the fields that describe the
        request (provider, route, models, principal, client, credential: the same for
        many requests), serialized once per distinct set, and the fields of what happened.
        A message's serialized fields concatenated parse as one message."""
        texts = self._texts()
        principal = self.principal
        key = (
            self.provider_name,
            self.provider_type,
            texts,
            None if principal is None else principal.token_id,
            None if principal is None else principal.principal_id,
            None if principal is None else principal.principal_name,
            self.client,
            self.credential_kind,
            self.credential_hint,
            self.proxied,
        )
        described = _DESCRIBED.get(key)
        if described is None:
            if len(_DESCRIBED) >= MAX_DESCRIBED:
                _DESCRIBED.clear()
            described = self._described(texts).SerializeToString()
            _DESCRIBED[key] = described
        return described + self._happened().SerializeToString()

    def _texts(self) -> tuple[str, str, str, str, str]:
        """Route, requested and served model, User-Agent and session: what the client or
        the upstream chose, fit to keep; one scan for every known secret at once, and one
        test of the common case, all of it short and printable."""
        reader = self.reader
        served = self.served_model or (reader.model if reader is not None else "")
        texts = (self.route, self.requested_model, served, self.user_agent, self.session_id)
        blob = " ".join(texts)
        secrets = self.secrets
        for secret in secrets:  # (a loop: `any` over a generator costs more)
            if secret in blob:
                texts = tuple(_masked(text, secrets) for text in texts)  # type: ignore[assignment]
                break
        else:
            if len(blob) <= recording.MAX_NAME and blob.isprintable():
                return texts
        route, requested, served, ua, session = texts
        name = recording.MAX_NAME
        return (
            line(route, recording.MAX_ROUTE),
            line(requested, name),
            line(served, name),
            line(ua, recording.MAX_USER_AGENT),
            line(session, name),
        )

    def _described(self, texts: tuple[str, str, str, str, str]) -> usage_pb2.Interception:
        """A record of the fields that describe the request. Provider name, principal and
        hint come from the snapshot (checked by the config service when they were made)
        and the client slug from `detect`: already fit."""
        route, requested, served, ua, session = texts
        principal = self.principal
        return usage_pb2.Interception(
            provider_name=self.provider_name,
            provider_type=self.provider_type,  # type: ignore[arg-type]
            route=route,
            requested_model=requested,
            served_model=served,
            principal_id=principal.principal_id if principal is not None else "",
            principal_name=principal.principal_name if principal is not None else "",
            token_id=principal.token_id if principal is not None else "",
            client=self.client,
            user_agent=ua,
            session_id=session,
            credential_kind=self.credential_kind,  # type: ignore[arg-type]
            credential_hint=self.credential_hint,
            proxied=self.proxied,
        )

    def _happened(self) -> usage_pb2.Interception:
        """A record of the fields of what happened: id, times, outcome, usage, tool calls,
        prompt."""
        record = usage_pb2.Interception(
            id=self.id,
            outcome=self.outcome(),  # type: ignore[arg-type]
            status_code=self.status,
            attempts=self.attempts,
            streamed=self.streamed,
        )
        # Setting a submessage's fields is about twice as fast as constructing it.
        stamp = record.started_at
        stamp.seconds, stamp.nanos = divmod(self.started_ns, 1_000_000_000)
        stamp = record.ended_at
        stamp.seconds, stamp.nanos = divmod(max(self.ended_ns, self.first_byte_ns), 1_000_000_000)
        if self.first_byte_ns:
            stamp = record.first_byte_at
            stamp.seconds, stamp.nanos = divmod(self.first_byte_ns, 1_000_000_000)
        secrets = self.secrets
        if self.prompt:
            record.prompt = _free(self.prompt, recording.MAX_PROMPT, secrets)
        reader = self.reader
        if reader is None:
            return record
        if reader.tokens:
            usage = record.usage
            for kind, count in reader.tokens.items():
                setattr(usage, _TOKEN_FIELDS[kind], min(max(count, 0), MAX_TOKEN_COUNT))
        name = recording.MAX_NAME
        for tool, call_id, arguments in reader.tool_calls:
            record.tool_calls.add(
                name=line(_masked(tool, secrets), name),
                call_id=line(_masked(call_id, secrets), name),
                arguments=_free(arguments, recording.MAX_ARGUMENTS, secrets),
            )
        return record


def _masked(value: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in value:
            value = value.replace(secret, mask_secret(secret))
    return value


def _free(value: str, limit: int, secrets: list[str]) -> str:
    """Free text cut near its limit (a secret across the cut still seen), then masked."""
    longest = max(map(len, secrets), default=0)
    return content(_masked(value[: limit + longest], secrets), limit)
