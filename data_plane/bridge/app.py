"""The bridge's ASGI app: health, metrics, and /<provider>/... for every provider.

Order of checks for a provider request: known provider (404, naming the providers
there are), built and enabled (503, with the reason), route served (404), gateway token
(401/403), BYOK allowed (403), a credential to use (401), body size (413), room in the
body budget (503); then `Forwarder.run`. Every error is in the provider's own format;
where no provider says which (an unknown name, an unknown type), in the format the client
speaks.
The routing table is read once per request, so a snapshot swap never changes the
providers or tokens a request in flight sees.

Every answer under /<provider>/ carries `X-AIBridge-Request-Id`. With a record sink, every
answer to a caller whose gateway token authenticates (a member), once the provider is
known, becomes one interception record (`interception/`), refusals included; requests
to an unknown provider or without a valid member token have no principal to attribute
them to and are only counted (`aibridged_unrecorded_requests_total`).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aibridge.asgi import lifespan
from aibridge.config.v1 import provider_pb2, usage_pb2
from aibridge.logs import get_logger
from aibridge.masking import mask_secret
from aibridge.recording import MAX_HINT
from aibridge.rulebook import Family
from aibridge.telemetry import TRACE_HEADERS
from data_plane.body_budget import BodyBudget, Hold
from data_plane.bridge.asgi import (
    BODY,
    BODY_IN,
    LOST,
    ConnectionLost,
    Receive,
    Scope,
    Send,
    respond,
)
from data_plane.bridge.forward import Call, Forwarder
from data_plane.bridge.interception import RecordSink
from data_plane.bridge.interception.clients import HEADERS as CLIENT_HEADERS
from data_plane.bridge.interception.clients import session_from_metadata
from data_plane.bridge.interception.record import (
    REQUEST_ID,
    VIA,
    Capture,
    RequestIds,
    interception,
    line,
)
from data_plane.bridge.interception.request import last_user_message
from data_plane.bridge.metrics import BridgeMetrics
from data_plane.bridge.model_labels import ModelLabels
from data_plane.bridge.providers import Provider, error_body
from data_plane.bridge.routing import EMPTY, RoutingTable
from data_plane.dump import Dumper
from data_plane.errors import BodyLate, BudgetFull, ClientGone, TooLarge
from data_plane.gateway_auth import Principal, lookup
from data_plane.transport import UpstreamTransport

if TYPE_CHECKING:
    from data_plane.bridge.tracing import BridgeTelemetry, CallSpan

log = get_logger(__name__)

MAX_BODY = 32 * 1024 * 1024
# Enum values by the module's constants: the enum wrapper's attribute lookup costs ~0.6 us.
# Never forwarded upstream: hop-by-hop, recomputed by httpx, or the gateway's own.
_DROP_REQUEST = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"x-aibridge-token",
        b"proxy-authorization",
        REQUEST_ID,
        VIA,
    }
)
_CREDENTIALS = frozenset({b"authorization", b"x-api-key"})
_CLIENT_HEADERS = CLIENT_HEADERS | {REQUEST_ID, VIA}


def _has_dot_segment(path: str) -> bool:
    return any(segment in (".", "..") for segment in path.split("/"))


def client_family(scope: Scope) -> Family:
    """The API a request speaks, for an error no provider's family decides.

    Anthropic's clients (Claude Code, the SDKs) always send `anthropic-version`;
    everything else is answered in OpenAI's shape.
    """
    if scope["path"].endswith("/v1/messages"):
        return Family.ANTHROPIC
    return next(
        (Family.ANTHROPIC for key, _ in scope["headers"] if key == b"anthropic-version"),
        Family.OPENAI,
    )


def _bearer(value: bytes | None) -> bytes | None:
    if value is None:
        return None
    scheme, _, token = value.partition(b" ")
    return token.strip() or None if scheme.lower() == b"bearer" else None


@dataclass(slots=True)
class _Credentials:
    """The headers that say who a request is from (its credentials, the client, the
    proxy's request id), read in one pass."""

    authorization: bytes | None
    api_key: bytes | None
    byok: bytes | None  # X-AIBridge-Token: the gateway token beside the client's own key
    content_length: bytes | None
    client: dict[bytes, bytes] = field(default_factory=dict)  # what names the client

    @classmethod
    def of(cls, scope: Scope) -> _Credentials:
        authz = xkey = byok = clen = None
        client: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            if key == b"authorization":
                authz = value
            elif key == b"x-api-key":
                xkey = value
            elif key == b"x-aibridge-token":
                byok = value
            elif key == b"content-length":
                clen = value
            elif key in _CLIENT_HEADERS:
                client[key] = value
        return cls(authz, xkey, byok, clen, client)

    @property
    def own_key(self) -> bytes | None:
        """The client's own upstream credential (meaningful with X-AIBridge-Token)."""
        return _bearer(self.authorization) or self.api_key or self.authorization

    @property
    def secrets(self) -> list[str]:
        """The credentials the request carries (its gateway token; with BYOK its own key
        too), to keep out of its record."""
        values = (self.gateway_token, self.own_key) if self.byok else (self.gateway_token,)
        return [v.decode("utf-8", "replace") for v in values if v]

    @property
    def gateway_token(self) -> bytes | None:
        if self.byok is not None:
            return self.byok
        return _bearer(self.authorization) or self.api_key


@dataclass(slots=True)
class _Caller:
    principal: Principal
    own_key: bool  # the client brings its own upstream credential (BYOK)


@dataclass(slots=True)
class _Route:
    """Where a call goes: its provider, the path under it, how it is handled."""

    provider: Provider
    path: str
    intercepted: bool  # an intercepted route (else passthrough)
    mode: str  # the credential mode (`_mode`)


def _unusable(provider: Provider) -> tuple[str, str] | None:
    """Why a provider of the table cannot serve (message, code), or None when it can."""
    if provider.status == provider_pb2.PROVIDER_STATUS_DISABLED:
        return f"provider_disabled: AI provider {provider.name!r} is disabled", "provider_disabled"
    if provider.status != provider_pb2.PROVIDER_STATUS_ENABLED:
        reason = provider.status_reason or "misconfigured"
        message = f"provider_error: AI provider {provider.name!r} cannot be used: {reason}"
        return message, "provider_error"
    return None


def _no_credential(provider: Provider) -> str:
    if provider.family is Family.COPILOT:
        return (
            "missing Copilot authorization: send your Copilot token as Authorization "
            "and the gateway token as X-AIBridge-Token"
        )
    return (
        f"AI provider {provider.name!r} has no keys configured: bring your own key "
        "(gateway token in X-AIBridge-Token)"
    )


class BridgeApp:
    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        upstream: UpstreamTransport,
        metrics: BridgeMetrics | None = None,
        dumper: Dumper | None = None,
        body_budget: BodyBudget,
        telemetry: BridgeTelemetry | None = None,
        sink: RecordSink | None = None,
        record_prompts: bool = False,
    ) -> None:
        self.table: RoutingTable = EMPTY
        self.sink = sink  # None: recording off
        self.record_prompts = record_prompts
        self.request_ids = RequestIds()
        # With telemetry on, a request's trace context is replaced by the attempt's own.
        self.telemetry = telemetry
        self._drop = _DROP_REQUEST | (TRACE_HEADERS if telemetry is not None else frozenset())
        self._drop_pooled = self._drop | _CREDENTIALS
        self.body_budget = body_budget
        self.models = ModelLabels()
        self.http = http
        self.metrics = metrics or BridgeMetrics()
        self.metrics.watch_table(lambda: self.table)
        self.forwarder = Forwarder(http, upstream, self.metrics, dumper)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await lifespan(receive, send)
            return
        path: str = scope["path"]
        if path == "/healthz":
            await respond(send, 200, b'{"status":"ok"}')
        elif path == "/readyz":
            table = self.table
            ready = table.applied and not table.not_ready
            doc: dict[str, object] = {"ready": ready, "version": table.version}
            if table.not_ready:
                doc["reason"] = table.not_ready
            await respond(send, 200 if ready else 503, json.dumps(doc).encode())
        elif path == "/metrics":
            await respond(
                send,
                200,
                generate_latest(self.metrics.registry),
                content_type=CONTENT_TYPE_LATEST.encode(),
            )
        else:
            await self._provider_request(scope, receive, send)

    async def _error(
        self,
        send: Send,
        family: Family | None,
        status: int,
        message: str,
        code: str,
        extra_headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        await respond(send, status, error_body(family, status, message, code), extra_headers)

    async def _provider_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        table = self.table
        started = time.time_ns()
        creds = _Credentials.of(scope)
        client = creds.client
        proposed = client.get(REQUEST_ID) if client.get(VIA) == b"proxy" else None
        capture = Capture(self.request_ids.take(proposed, started), started, client)
        trace = None
        if self.telemetry is not None:
            trace = self.telemetry.begin(capture, scope["method"], scope["headers"])
        try:
            await self._serve(scope, receive, capture.bind(send), table, creds, capture, trace)
        finally:
            record = self._record(capture, table, creds)
            if trace is not None:
                try:
                    trace.finish(capture, record, self.models)
                except Exception:  # a bug here must not turn a served request into an error
                    log.exception("ending the request's span failed", request_id=capture.id)

    def _record(
        self, capture: Capture, table: RoutingTable, creds: _Credentials
    ) -> usage_pb2.Interception | None:
        """The finished interception's record, handed to the sink, when it can be
        attributed; with telemetry on it is built for the span even without a sink."""
        sink = self.sink
        if sink is None and self.telemetry is None:
            return None
        if not capture.provider_name:
            if sink is not None:
                self.metrics.unrecorded.labels("unknown_provider").inc()
            return None
        if capture.principal is None:  # refused before (or while) authenticating
            principal = self._authenticate(table, creds.gateway_token)
            if not isinstance(principal, Principal) or not principal.may_use_gateway:
                if sink is not None:
                    self.metrics.unrecorded.labels("unauthenticated").inc()
                return None
            capture.principal = principal
        capture.presented = creds  # its secrets read only where a text is made fit
        capture.end()
        record = capture.made()  # encoded by the sink in its batches, off the request path
        if sink is not None:
            sink.submit(record)
        if self.telemetry is None:
            return None
        try:
            return interception(record.values())
        except Exception:  # a bug here must not turn a served request into an error
            log.exception("building an interception record failed", request_id=capture.id)
            return None

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        table: RoutingTable,
        creds: _Credentials,
        capture: Capture,
        trace: CallSpan | None,
    ) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        name, _, rest = path[1:].partition("/")
        provider = table.providers.get(name)
        if provider is None:
            unbuilt = table.failed.get(name)
            if unbuilt is not None:
                capture.provider(name, unbuilt.type)
                capture.route = "/" + rest
            return await self._error(send, *self._not_served(table, name, scope, creds))
        capture.provider(provider.name, provider.type, provider.keys)
        sub = capture.route = "/" + rest
        family = provider.family
        unusable = _unusable(provider)
        if unusable is not None:
            return await self._error(send, family, 503, *unusable)
        # A `.`/`..` segment (also sent as %2e%2e or across an encoded slash, which the
        # server has decoded by now) would be resolved by the HTTP client into another
        # upstream path, outside the routes served (and with a pooled key): refuse it.
        intercepted = None if _has_dot_segment(sub) else provider.match(sub)
        if intercepted is None:
            return await self._error(
                send, family, 404, f"route not supported: {method} {path}", "route_not_supported"
            )
        caller = self._identify(table, creds)
        if not isinstance(caller, _Caller):
            return await self._error(send, family, *caller)
        capture.principal = caller.principal
        mode = self._credential(provider, caller, creds, capture)
        if mode is None:
            return await self._error(send, family, 401, _no_credential(provider), "no_credential")
        if mode == "bedrock" and not intercepted:
            return await self._error(
                send, family, 404, f"route not supported: {method} {path}", "route_not_supported"
            )
        route = _Route(provider, sub, intercepted, mode)
        await self._forward(scope, receive, send, route, caller, creds, capture, trace)

    def _credential(
        self, provider: Provider, caller: _Caller, creds: _Credentials, capture: Capture
    ) -> str | None:
        """The call's credential mode (None: the caller has none this provider takes),
        noted in the capture with the masked hint of a client's own key."""
        mode = self._mode(provider, caller.own_key)
        if mode == "byok":
            own = creds.own_key
            capture.credential_kind = usage_pb2.CREDENTIAL_KIND_BYOK
            hint = mask_secret(own.decode("utf-8", "replace")) if own else ""
            capture.credential_hint = line(hint, MAX_HINT)  # the client's bytes, any of them
        elif mode is not None:
            capture.credential_kind = usage_pb2.CREDENTIAL_KIND_POOLED
        return mode

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: _Route,
        caller: _Caller,
        creds: _Credentials,
        capture: Capture,
        trace: CallSpan | None,
    ) -> None:
        """Read the body (within the bodies' budget) and forward the call upstream."""
        hold = Hold(self.body_budget)  # given back once the call is over
        try:
            family = route.provider.family
            body_in = bool((scope.get("extensions") or {}).get(BODY_IN))
            body = await self._receive_body(
                receive, send, family, creds.content_length, hold, body_in
            )
            if body is None:
                return None
            drop = self._drop if caller.own_key else self._drop_pooled
            call = Call(
                provider=route.provider,
                path=route.path,
                query=scope.get("query_string", b""),
                intercepted=route.intercepted,
                mode=route.mode,
                method=scope["method"],
                headers=[(k, v) for k, v in scope["headers"] if k not in drop],
                body=body,
                request_id=capture.id,
                principal_id=caller.principal.principal_id,
                capture=capture,
            )
            if route.intercepted:
                self._inspect(call)
            call.trace = trace
            await self._guarded(call, scope, send)
        finally:
            hold.release()

    @classmethod
    def _not_served(
        cls, table: RoutingTable, name: str, scope: Scope, creds: _Credentials
    ) -> tuple[Family, int, str, str]:
        """(family, status, message, code) for a name the table has no provider for."""
        unbuilt = table.failed.get(name)
        if unbuilt is not None:
            message = f"provider_error: AI provider {name!r} cannot be used: {unbuilt.error}"
            return unbuilt.family or client_family(scope), 503, message, "provider_error"
        # Which providers exist is told to gateway users only, not to any scanner.
        known = isinstance(cls._authenticate(table, creds.gateway_token), Principal)
        listed = (
            f"configured: {', '.join(table.names) or 'none'}"
            if known
            else "send a gateway token to see the configured providers"
        )
        message = f"no provider named {name!r}; {listed}"
        return client_family(scope), 404, message, "provider_not_found"

    @classmethod
    def _identify(cls, table: RoutingTable, creds: _Credentials) -> _Caller | tuple[int, str, str]:
        """Who calls, with whose upstream credential; else (status, message, code)."""
        own_key = False
        if creds.byok is not None:
            if not table.allow_byok:
                return 403, "Bring Your Own Key (BYOK) mode is not enabled.", "byok_disabled"
            own_key = creds.authorization is not None or creds.api_key is not None
        principal = cls._authenticate(table, creds.gateway_token)
        if not isinstance(principal, Principal):
            status, message = principal
            return status, message, "invalid_api_key" if status == 401 else "forbidden"
        return _Caller(principal, own_key)

    async def _receive_body(
        self,
        receive: Receive,
        send: Send,
        family: Family,
        content_length: bytes | None,
        hold: Hold,
        body_in: bool,
    ) -> bytes | None:
        """The request body, or None once an error went to the client (or it left)."""
        try:
            return await self._read_body(receive, content_length, hold, body_in)
        except TooLarge:
            message = f"request body exceeds {MAX_BODY} bytes"
            await self._error(send, family, 413, message, "request_too_large")
        except BudgetFull:
            await self._error(
                send,
                family,
                503,
                "the bridge holds too many request bodies at the moment, retry shortly",
                "body_buffer_full",
                ((b"retry-after", b"1"),),
            )
        except BodyLate:
            message = f"the request body did not arrive within {self.body_budget.timeout:g}s"
            await self._error(send, family, 408, message, "request_timeout")
        except ClientGone:
            pass
        return None

    @staticmethod
    def _authenticate(table: RoutingTable, token: bytes | None) -> Principal | tuple[int, str]:
        if not token:
            return 401, "no authentication key provided"
        principal = lookup(table.tokens, token)
        if principal is None:
            return 401, "invalid or revoked gateway token"
        if not principal.may_use_gateway:
            return 403, "this token's role may not use the bridge"
        return principal

    @staticmethod
    def _mode(provider: Provider, own_key: bool) -> str | None:
        if own_key:
            return "byok"
        if provider.family is Family.COPILOT:
            return None
        if provider.pool is not None:
            return "pool"
        return "bedrock" if provider.bedrock is not None else None

    @staticmethod
    async def _read_body(
        receive: Receive, content_length: bytes | None, hold: Hold, body_in: bool
    ) -> bytes:
        """The whole body, its size taken from the budget as it arrives (not as declared),
        within the body timeout unless the server has it all already (`body_in`)."""
        if (
            content_length is not None
            and content_length.isdigit()
            and int(content_length) > MAX_BODY
        ):
            raise TooLarge
        if body_in:  # nothing to wait for: no timer armed and cancelled per request
            return await _body_chunks(receive, hold)
        try:
            async with asyncio.timeout(hold.budget.timeout):
                return await _body_chunks(receive, hold)
        except TimeoutError:
            raise BodyLate from None

    def _inspect(self, call: Call) -> None:
        try:
            doc = json.loads(call.body) if call.body else None
        except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
            doc = None
        if isinstance(doc, dict):
            model = doc.get("model")
            # A label, not the request's model: bounded per provider (see model_labels).
            call.model = (
                self.models.label(call.provider.name, model) if isinstance(model, str) else ""
            )
            call.stream = doc.get("stream") is True
            capture = call.capture
            if isinstance(model, str):
                capture.requested_model = model
            if not capture.session_id:
                capture.session_id = session_from_metadata(doc)
            if self.record_prompts and self.sink is not None:
                capture.prompt = last_user_message(doc)
                capture.arguments = True

    async def _guarded(self, call: Call, scope: Scope, send: Send) -> None:
        """Run the call, cancelling it (and so the upstream request) if the client leaves."""
        # The bridge's protocol always provides the hook; another ASGI server (a test
        # client) gets none, and a client leaving is then seen only when a send fails.
        extensions = scope.get("extensions") or {}
        lost: ConnectionLost = extensions.get(LOST) or ConnectionLost()
        task = asyncio.current_task(lost.loop)
        assert task is not None
        call.direct_body = extensions.get(BODY)
        disconnected = False
        capture = call.capture

        def on_lost() -> None:
            nonlocal disconnected
            if not capture.answered:  # a complete answer is not a client exit
                disconnected = True
                task.cancel()

        lost.callback = on_lost
        try:
            await self.forwarder.run(call, send)
        except asyncio.CancelledError:
            if disconnected and task.uncancel() == 0:
                log.info(
                    "client disconnected", request_id=call.request_id, provider=call.provider.name
                )
                return
            raise
        finally:
            lost.callback = None


async def _body_chunks(receive: Receive, hold: Hold) -> bytes:
    """The body's messages from `receive()`, joined; each chunk counted in `hold`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise TooLarge
        hold.grow_to(size)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
