"""One call to the upstream: breaker, key failover, relay, usage, dump, metrics.

Failover happens only on the upstream status, before a single byte is sent to the
client, so a stream is never retried once it started. The response body is relayed
raw (still encoded, byte for byte) as each chunk arrives.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from aibridge.config.v1 import usage_pb2
from aibridge.logs import AccessLog, get_logger
from aibridge.rulebook import Family
from data_plane.bridge.asgi import DirectBody, Send, respond
from data_plane.bridge.breaker import Rejected
from data_plane.bridge.interception.record import Capture
from data_plane.bridge.interception.response import ResponseReader
from data_plane.bridge.metrics import BridgeMetrics
from data_plane.bridge.providers import Provider, error_body
from data_plane.bridge.upstream import AnthropicUpstream, UpstreamResponse
from data_plane.dump import BodyCapture, Dumper, Exchange
from data_plane.transport import Origin, Timeouts, UpstreamTransport, origin_of

if TYPE_CHECKING:
    from data_plane.bridge.tracing import CallSpan

log = get_logger(__name__)
_access = AccessLog(__name__, "request")  # one line per request

_DROP_RESPONSE = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"trailer",
        b"proxy-connection",
        b"upgrade",
    }
)


@dataclass
class Call:
    """Everything known about a client request once it is authenticated and read."""

    provider: Provider
    path: str  # below /<provider>
    query: bytes
    intercepted: bool
    mode: str  # pool | byok | bedrock
    method: str
    headers: list[tuple[bytes, bytes]]  # to send upstream, without pooled credentials
    body: bytes
    request_id: str
    principal_id: str
    capture: Capture  # what the interception record will say
    model: str = ""  # bounded label of the requested model (metrics, breakers, dumps)
    stream: bool = False
    status: int = 0
    key_hint: str = ""
    started: float = field(default_factory=time.perf_counter)
    trace: CallSpan | None = None  # the call's span, when telemetry is on
    direct_body: DirectBody | None = None  # the server's direct body writer, if it has one

    @property
    def route(self) -> str:
        return self.path if self.intercepted else "passthrough"


@dataclass(frozen=True)
class _Route:
    """Where one base URL points: its origin and path prefix."""

    origin: Origin
    prefix: bytes


# Paths and queries sent as they are; anything else is normalised by httpx.URL.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/._~:@!$&'()*+,;=-]*")
_PLAIN_QUERY = re.compile(rb"[\x21-\x7e]*")


class Forwarder:
    def __init__(
        self,
        http: httpx.AsyncClient,
        upstream: UpstreamTransport,
        metrics: BridgeMetrics,
        dumper: Dumper | None,
    ) -> None:
        self.http = http
        self.upstream = upstream
        self.metrics = metrics
        self.dumper = dumper
        self._routes: dict[str, _Route] = {}

    def _route(self, provider: Provider) -> _Route:
        route = self._routes.get(provider.base_url)
        if route is None:
            origin, prefix = origin_of(provider.base_url)
            route = self._routes[provider.base_url] = _Route(origin, prefix.rstrip(b"/"))
        return route

    async def _send_http(self, call: Call, key: str | None) -> UpstreamResponse:
        headers = call.headers
        if key is not None:
            auth = (
                (b"x-api-key", key.encode())
                if call.provider.family is Family.ANTHROPIC
                else (b"authorization", b"Bearer " + key.encode())
            )
            headers = [*headers, auth]
        provider = call.provider
        route = self._route(provider)
        suffix = call.path.removeprefix(provider.routes.strip_prefix)
        if _PLAIN_PATH.fullmatch(suffix) and _PLAIN_QUERY.fullmatch(call.query):
            target = route.prefix + suffix.encode()
            if call.query:
                target += b"?" + call.query
        else:  # let httpx percent-encode it
            target = httpx.URL(provider.upstream_url(call.path, call.query)).raw_path
        t = self.http.timeout  # the client's settings rule, as for the Bedrock client
        attempt = None
        if call.trace is not None:
            path = target.partition(b"?")[0].decode("latin-1")
            attempt = call.trace.attempt(call, route.origin, path)
            headers = [*headers, *attempt.headers]
        try:
            reply = await self.upstream.request(
                route.origin,
                call.method,
                target,
                headers,
                call.body,
                Timeouts(t.connect, t.read, t.write, t.pool),
            )
        except BaseException as exc:
            if attempt is not None:
                attempt.failed(exc)
            raise
        response = UpstreamResponse(
            reply.status, reply.headers, reply.chunks, reply.close, relay=reply.relay
        )
        return response if attempt is None else attempt.answered(response)

    async def _send_bedrock(self, call: Call, bedrock: AnthropicUpstream) -> UpstreamResponse:
        call.capture.attempts = 1
        call.key_hint = call.capture.credential_hint = bedrock.credential_hint
        attempt = None
        if call.trace is not None:  # no traceparent: the request is SigV4-signed as it is
            attempt = call.trace.attempt(call, None, call.path)
        plain = {k.decode("latin-1"): v.decode("latin-1") for k, v in call.headers}
        try:
            response = await bedrock.send(
                path=call.path, body=call.body, headers=plain, stream=call.stream
            )
        except BaseException as exc:
            if attempt is not None:
                attempt.failed(exc)
            raise
        return response if attempt is None else attempt.answered(response)

    async def _upstream(self, call: Call, send: Send) -> UpstreamResponse | None:
        provider = call.provider
        if call.mode == "bedrock" and provider.bedrock is not None:
            return await self._send_bedrock(call, provider.bedrock)
        if call.mode != "pool" or provider.pool is None:
            call.capture.attempts = 1
            return await self._send_http(call, None)
        pool = provider.pool
        tried = 0
        for index, key in pool.walk():
            if tried:
                self.metrics.failovers.labels(provider.name).inc()
            tried += 1
            call.capture.attempts = tried
            response = await self._send_http(call, key)
            retry = (  # the pool reads a retry hint of a 429 only
                {
                    n: v
                    for n in ("retry-after", "retry-after-ms")
                    if (v := response.header(n.encode())) is not None
                }
                if response.status == 429
                else {}
            )
            if pool.report(index, response.status, retry):
                await response.aclose()
                continue
            call.key_hint = call.capture.credential_hint = pool.hints[index]
            # (the key is one of the provider's, which the capture masks already: not noted
            # in `capture.secrets`, so its record's description key stays flat)
            return response
        outcome = pool.exhausted()
        self.metrics.key_exhaustions.labels(
            provider.name, "rate_limited" if outcome.status == 429 else "auth_failed"
        ).inc()
        extra = (
            [(b"retry-after", str(outcome.retry_after).encode())] if outcome.status == 429 else []
        )
        code = "rate_limit_exceeded" if outcome.status == 429 else "key_pool_unavailable"
        call.status = outcome.status
        call.capture.refused = usage_pb2.OUTCOME_REFUSED_POOL
        await respond(
            send,
            outcome.status,
            error_body(provider.family, outcome.status, outcome.message, code),
            extra,
        )
        return None

    async def run(self, call: Call, send: Send) -> None:
        """Serve the call; `call.status` is what the client got (499: it went away)."""
        provider = call.provider
        labels = (provider.name, call.route)
        self.metrics.route_series(*labels)[0].inc()
        breaker = generation = None
        if call.intercepted and provider.breakers is not None:
            breaker = provider.breakers.get(call.path, call.model)
            admitted = breaker.allow()
            if isinstance(admitted, Rejected):
                self.metrics.breaker_rejects.labels(provider.name, call.path, call.model).inc()
                call.status = 503
                call.capture.refused = usage_pb2.OUTCOME_REFUSED_BREAKER
                await respond(
                    send,
                    503,
                    error_body(
                        provider.family, 503, "circuit breaker is open", "service_unavailable"
                    ),
                    [(b"retry-after", str(admitted.retry_after).encode())],
                )
                self._finish(call, labels, {})
                return
            generation = admitted
        exchange = None
        if self.dumper is not None:
            exchange = Exchange(
                provider.name,
                call.model if call.intercepted else None,
                call.request_id,
                call.method,
                call.path,
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in call.headers],
                call.body,
            )
        tokens: dict[str, int] = {}
        try:
            tokens = await self._relay(call, send, exchange)
        except asyncio.CancelledError:
            call.status = 499  # the client went away; the upstream call is abandoned
            raise
        finally:
            if breaker is not None and generation is not None:
                failure = (
                    None
                    if call.status in (0, 499)
                    else provider.breakers is not None and provider.breakers.is_failure(call.status)
                )
                breaker.record(generation, failure)
            self._finish(call, labels, tokens)
            if exchange is not None and self.dumper is not None:
                exchange.status = call.status
                await self.dumper.dump(exchange)

    async def _relay(self, call: Call, send: Send, exchange: Exchange | None) -> dict[str, int]:
        """Answer the client from the upstream; the usage tokens read on the way."""
        response = await self._open(call, send, exchange)
        if response is None:
            return {}
        try:
            return await self._stream(call, send, exchange, response)
        except httpx.HTTPError as exc:
            call.capture.broken = True
            self.metrics.upstream_errors.labels(call.provider.name, call.route, "stream").inc()
            if exchange is not None:
                exchange.error = f"{type(exc).__name__} after the response started: {exc}"
            log.warning(
                "upstream stream broke",
                request_id=call.request_id,
                provider=call.provider.name,
                error=type(exc).__name__,
            )
            return {}
        finally:
            await response.aclose()

    async def _open(
        self, call: Call, send: Send, exchange: Exchange | None
    ) -> UpstreamResponse | None:
        """The upstream's response, or None once an answer already went to the client."""
        provider = call.provider
        try:
            return await self._upstream(call, send)
        except httpx.InvalidURL:
            # The client's path or query cannot make an upstream URL (a control character
            # such as %00, or too long): the client's mistake, not a 500.
            call.status = 400
            message = "invalid request path or query"
            await respond(send, 400, error_body(provider.family, 400, message, "invalid_request"))
            return None
        except httpx.HTTPError as exc:
            kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "transport"
            self.metrics.upstream_errors.labels(provider.name, call.route, kind).inc()
            call.status = 504 if kind == "timeout" else 502
            log.warning(
                "upstream request failed",
                request_id=call.request_id,
                provider=provider.name,
                error=type(exc).__name__,
                detail=str(exc),
            )
            if exchange is not None:
                exchange.error = f"{type(exc).__name__}: {exc}"
            message = f"upstream request failed: {type(exc).__name__}"
            body = error_body(provider.family, call.status, message, "upstream_error")
            await respond(send, call.status, body)
            return None

    async def _stream(
        self, call: Call, send: Send, exchange: Exchange | None, response: UpstreamResponse
    ) -> dict[str, int]:
        """Relay status, headers and the body chunk by chunk, as they arrive."""
        call.status = response.status
        capture = call.capture
        headers = [(k, v) for k, v in response.headers if k.lower() not in _DROP_RESPONSE]
        sse = "text/event-stream" in (response.header(b"content-type") or "")
        capture.relayed = True  # from here on the answer is the upstream's
        capture.streamed = sse
        capture.served_model = response.served_model
        reader = None
        if call.intercepted:
            reader = capture.reader = ResponseReader(
                sse, response.header(b"content-encoding"), capture.arguments
            )
        dumped = None
        if exchange is not None:
            exchange.response_headers = [
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in headers
            ]
            dumped = BodyCapture()
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        direct = call.direct_body
        if direct is not None and direct.usable():
            await self._relay_direct(capture, direct, response, reader, dumped)
        else:
            async for chunk in response.chunks:
                if chunk:
                    try:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    finally:  # a chunk sent is read even when the client leaves meanwhile
                        if reader is not None:
                            reader.feed(chunk)
                    if dumped is not None:
                        dumped.feed(chunk)
        if exchange is not None and dumped is not None:
            exchange.response_body = dumped.body()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return reader.finish().tokens if reader is not None else {}

    @staticmethod
    async def _relay_direct(
        capture: Capture,
        direct: DirectBody,
        response: UpstreamResponse,
        reader: ResponseReader | None,
        dumped: BodyCapture | None,
    ) -> None:
        """The body through the server's direct writer: each upstream read (however many
        events it holds) is one write to the client, with none of `send`'s per-message
        work; the first byte is stamped once. Past the client's high-water mark no more is
        read from the upstream until the client drained its buffer. When the upstream
        connection offers `relay`, the pieces go from its read callback to the client with
        no task step per read."""

        def piece(chunk: bytes) -> Awaitable[None] | None:
            if not chunk:
                return None
            if not capture.first_byte_ns:
                capture.first_byte_ns = time.time_ns()
            drain = direct.write(chunk)
            if reader is not None:
                reader.feed(chunk)
            if dumped is not None:
                dumped.feed(chunk)
            return drain

        if response.relay is not None:
            await response.relay(piece)
            return
        async for chunk in response.chunks:
            drain = piece(chunk)
            if drain is not None:
                await drain

    def _finish(self, call: Call, labels: tuple[str, str], tokens: dict[str, int]) -> None:
        m = self.metrics
        elapsed = time.perf_counter() - call.started
        in_flight, duration = m.route_series(*labels)
        in_flight.dec()
        duration.observe(elapsed)
        m.request_counter(labels[0], labels[1], call.model, call.status or 499).inc()
        for kind, count in tokens.items():
            if count:
                m.token_counter(labels[0], call.model, kind).inc(count)
        _access.info(
            request_id=call.request_id,
            provider=labels[0],
            route=labels[1],
            method=call.method,
            model=call.model,
            status=call.status or 499,
            mode=call.mode,
            api_key_hint=call.key_hint,
            principal_id=call.principal_id,
            duration_ms=round(elapsed * 1000, 2),
            **{f"tokens_{k}": v for k, v in tokens.items()},
        )
