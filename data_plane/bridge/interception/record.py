"""One interception as the bridge sees it happen, and the record it becomes.

`Capture` is made when a provider request arrives and filled in as it is served (the
app: provider, route, principal, request facts; the forwarder: credential, attempts,
refusals, the response reader); `bind` wraps the ASGI `send` so that every answer
carries `X-AIBridge-Request-Id` and the status and first-byte time are seen whoever
answers. Once the request is over, `end` stamps its end and the capture is final:
`values` is its record (one tuple: the describing part cached per distinct set, then what
happened), `made` the same as the sink takes it (made as the request ends, so that the
sink's queue holds values, not captures: the sink encodes its batches at its own pace, off
the request path), and `interception` the same record as a `usage_pb2.Interception` (for
the request's span).

Outcome, in order: refused by the breaker or the pool (set by the forwarder); an
answer of the gateway's own (never relayed from the upstream): gateway error with its
status, or cancelled when nothing was sent; a relayed answer: upstream error when its
status is >= 400 or the stream broke or said it failed, completed when it was sent
whole or reached its terminal event (a client that hangs up right after the last
event, as Codex does, still had its whole answer), else cancelled.

Every string is made fit for the config service before it leaves (`line`, `content`):
cut to its limit in `aibridge.recording`, control and format characters replaced, no
NUL, valid UTF-8; so one odd header never gets a batch refused. The secrets the bridge
knows a request by (the gateway token presented, the client's own key, the provider's
pooled keys) are masked wherever they appear in the record's text. They are gathered only
when a text is made fit (a description not seen before, a prompt, tool calls): the
description cache is keyed by what determines them instead (the principal the gateway
token was found as, the provider's keys; the credentials themselves when the client
presented its own key beside the gateway token).
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

from aibridge import recording
from aibridge.config.v1 import usage_pb2
from aibridge.masking import mask_secret
from aibridge.rulebook import TYPES
from data_plane.bridge.asgi import Message, Send
from data_plane.bridge.interception.clients import detect, session_from_headers
from data_plane.bridge.interception.response import ResponseReader
from data_plane.recording.record import NO_TOKENS, Description, Made, Record, ToolCall, Values

if TYPE_CHECKING:
    from data_plane.gateway_auth import Principal

REQUEST_ID = b"x-aibridge-request-id"
VIA = b"x-aibridge-via"  # "proxy": the request came through aibridgeproxyd
MAX_ID = 36
# The reader's names of the token counts, in TokenUsage's order (as `values` reads them).
_TOKEN_KINDS = tuple(kind.removesuffix("_tokens") for kind in recording.TOKEN_KINDS)
assert _TOKEN_KINDS == ("input", "output", "cache_read", "cache_write", "reasoning")
_REPLACEMENT = "\ufffd"
# Descriptions (`Capture.values`), by what they were made of (and what determines the
# secrets masked in them).
MAX_DESCRIBED = 4096
_DESCRIBED: dict[tuple[object, ...], Description] = {}
# User-Agents decoded, by their bytes (those up to MAX_AGENT_CACHED bytes).
_AGENTS: dict[bytes, str] = {}
MAX_AGENT_CACHED = 512
_COMPLETED = usage_pb2.OUTCOME_COMPLETED
_UPSTREAM_ERROR = usage_pb2.OUTCOME_UPSTREAM_ERROR
_GATEWAY_ERROR = usage_pb2.OUTCOME_GATEWAY_ERROR
_CANCELLED = usage_pb2.OUTCOME_CANCELLED
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


class Presented(Protocol):
    """The credentials a request carried (the app's parsed headers)."""

    byok: bytes | None  # X-AIBridge-Token: the gateway token beside the client's own key

    @property
    def secrets(self) -> list[str]:
        """Its gateway token; with BYOK the client's own key too."""
        ...


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
        "keys",
        "presented",
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
        agent = headers.get(b"user-agent", b"")
        text = _AGENTS.get(agent)  # one object per User-Agent: its hash kept, for `values`
        if text is None:
            text = agent.decode("utf-8", "replace")
            if len(agent) <= MAX_AGENT_CACHED:
                if len(_AGENTS) >= MAX_DESCRIBED:
                    _AGENTS.clear()
                _AGENTS[agent] = text
        self.user_agent = text
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
        # Secrets noted while serving beyond the provider's keys (none today: the pooled
        # key used is one of `keys`); with the credentials presented (`presented`, set once
        # the request is over) and the provider's keys (`keys`): every secret kept out of
        # the record (`_secrets`).
        self.secrets: tuple[str, ...] = ()
        self.presented: Presented | None = None
        self.keys: tuple[str, ...] = ()
        self.arguments = False  # keep tool-call arguments (prompt recording is on)

    def provider(self, name: str, type_name: str, keys: tuple[str, ...] = ()) -> None:
        """The provider served (its pooled keys: secrets to keep out of the record)."""
        self.provider_name = name
        known = TYPES.get(type_name)
        self.provider_type = known.wire if known is not None else 0
        self.keys = keys

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
    # lookup costs microseconds.) `values` has the same rule inlined.
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
        ended = time.time_ns() if ended_ns is None else ended_ns
        # (conditionals, not max(): a builtin call costs ~1k instructions per request)
        self.ended_ns = ended if ended >= self.started_ns else self.started_ns
        reader = self.reader
        if reader is not None and not reader.finished:
            reader.finish()

    def made(self) -> Record:
        """The record (once `end` was called) as the sink keeps it: its values made now,
        while what they are made of is still in the CPU's caches, so that the queue holds
        a tuple per record and the capture, its reader and the request's headers go with
        the request (held until their batch is made, a second at saturation, thousands of
        them made the cache misses of every request's work: recgap in bench/README.md).
        The capture itself when making them fails: the sink finds it unbuildable."""
        try:
            return Made(self.values())
        except Exception:
            return self

    def values(self) -> Values:
        """The record as the shipper's batch takes it (once `end` was called): the
        description, one tuple per distinct set of what describes a request (made fit to
        keep once per set, cached: a dict lookup per request), then what happened.

        Run once per record in the shipper's batch loop, so written for the interpreter:
        no call on the common path (a Python or builtin call costs ~400 instructions, an
        attribute or a subscript ~50), one flat key."""
        reader = self.reader
        served = self.served_model or (reader.model if reader is not None else "")
        principal = self.principal
        presented = self.presented
        # The secrets masked in a description are determined by its key: the gateway
        # token by the principal it was found as (an object per token and snapshot, held
        # by the key: compared by identity), the pooled keys by the provider's (and the
        # one noted as used); with X-AIBridge-Token (the client's own key beside it,
        # whether or not it came to be used) or no principal, the credentials presented
        # themselves.
        key = (
            self.keys,
            principal,
            self.provider_name,
            self.provider_type,
            self.route,
            self.requested_model,
            served,
            self.user_agent,
            self.session_id,
            self.client,
            self.credential_kind,
            self.credential_hint,
            self.proxied,
            self.secrets,
            ()
            if principal is not None and presented is not None and presented.byok is None
            else _presented(presented),
        )
        try:
            description = _DESCRIBED[key]  # (a subscript: no call, ~300 instructions fewer)
        except KeyError:
            if len(_DESCRIBED) >= MAX_DESCRIBED:
                _DESCRIBED.clear()
            texts = self._texts(served, self._secrets())
            description = _DESCRIBED[key] = self._description(texts)
        prompt = self.prompt
        if prompt:
            prompt = _free(prompt, recording.MAX_PROMPT, self._secrets())
        tokens = NO_TOKENS
        calls: tuple[ToolCall, ...] = ()
        # The outcome (`outcome`, inlined: one call fewer per record).
        status = self.status
        if self.refused:
            outcome = self.refused
        elif not self.relayed:
            outcome = _GATEWAY_ERROR if status else _CANCELLED
        elif status >= 400 or self.broken or (reader is not None and reader.failed):
            outcome = _UPSTREAM_ERROR
        elif self.answered or (reader is not None and reader.terminal):
            outcome = _COMPLETED
        else:
            outcome = _CANCELLED
        if reader is not None:
            if reader.tokens:  # each within 0..MAX_TOKEN_COUNT (the reader's rule)
                tokens = reader.counts
            if reader.tools:
                calls = self._tool_calls(reader)
        first_byte, ended = self.first_byte_ns, self.ended_ns
        return (
            description,
            self.id,
            self.started_ns,
            first_byte,
            ended if ended >= first_byte else first_byte,
            outcome,
            status,
            self.attempts,
            self.streamed,
            tokens,
            calls,
            prompt,
        )

    def _secrets(self) -> list[str]:
        """Every secret the record must not hold: those noted while serving, the
        credentials presented, the provider's pooled keys."""
        presented = self.presented
        return [*self.secrets, *(presented.secrets if presented is not None else ()), *self.keys]

    def _description(self, texts: tuple[str, str, str, str, str]) -> Description:
        """What describes the request, its texts fit (`_texts`). Provider name, principal
        and hint come from the snapshot (checked by the config service when they were
        made) and the client slug from `detect`: already fit."""
        route, requested, served, ua, session = texts
        principal = self.principal
        return (
            self.provider_name,
            self.provider_type,
            route,
            requested,
            served,
            principal.principal_id if principal is not None else "",
            principal.principal_name if principal is not None else "",
            principal.token_id if principal is not None else "",
            self.client,
            ua,
            session,
            self.credential_kind,
            self.credential_hint,
            self.proxied,
        )

    def _tool_calls(self, reader: ResponseReader) -> tuple[ToolCall, ...]:
        secrets = self._secrets()
        name = recording.MAX_NAME
        return tuple(
            (
                line(_masked(tool, secrets), name),
                line(_masked(call_id, secrets), name),
                _free(arguments, recording.MAX_ARGUMENTS, secrets),
            )
            for tool, call_id, arguments in reader.tool_calls
        )

    def _texts(self, served: str, secrets: list[str]) -> tuple[str, str, str, str, str]:
        """Route, requested and served model, User-Agent and session: what the client or
        the upstream chose, fit to keep; one scan for every known secret at once, and one
        test of the common case, all of it short and printable."""
        texts = (self.route, self.requested_model, served, self.user_agent, self.session_id)
        blob = " ".join(texts)
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


def interception(values: Values) -> usage_pb2.Interception:
    """`values` as a `usage_pb2.Interception`."""
    d, record_id, started, first_byte, ended, outcome, status, attempts, streamed = values[:9]
    tokens, calls, prompt = values[9:]
    record = usage_pb2.Interception(
        id=record_id,
        provider_name=d[0],
        provider_type=d[1],  # type: ignore[arg-type]
        route=d[2],
        requested_model=d[3],
        served_model=d[4],
        principal_id=d[5],
        principal_name=d[6],
        token_id=d[7],
        client=d[8],
        user_agent=d[9],
        session_id=d[10],
        credential_kind=d[11],  # type: ignore[arg-type]
        credential_hint=d[12],
        proxied=d[13],
        outcome=outcome,  # type: ignore[arg-type]
        status_code=status,
        attempts=attempts,
        streamed=streamed,
        prompt=prompt,
    )
    for name, stamp in (
        ("started_at", started),
        ("first_byte_at", first_byte),
        ("ended_at", ended),
    ):
        if stamp:
            ts = getattr(record, name)
            ts.seconds, ts.nanos = divmod(stamp, 1_000_000_000)
    if any(tokens):
        for kind, count in zip(recording.TOKEN_KINDS, tokens, strict=True):
            setattr(record.usage, kind, count)
    for name, call_id, arguments in calls:
        record.tool_calls.add(name=name, call_id=call_id, arguments=arguments)
    return record


def _presented(presented: Presented | None) -> tuple[str, ...]:
    return tuple(presented.secrets) if presented is not None else ()


def _masked(value: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in value:
            value = value.replace(secret, mask_secret(secret))
    return value


def _free(value: str, limit: int, secrets: list[str]) -> str:
    """Free text cut near its limit (a secret across the cut still seen), then masked."""
    longest = max(map(len, secrets), default=0)
    return content(_masked(value[: limit + longest], secrets), limit)
