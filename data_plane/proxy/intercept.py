"""Provider requests: TLS termination for intercepted hosts, and the hand-off to the bridge.

After a CONNECT to a provider host the client's TLS is terminated with a leaf signed by
the proxy CA, and every request on that connection (keep-alive) is rewritten to
`<bridge>/<provider>/<original path>` with the client's identity. The host's route is
looked up again for each request: when a snapshot stops intercepting the host, the
client is told to reconnect (421, connection closed), and its next CONNECT is tunnelled.
"""

from __future__ import annotations

import json
import ssl
import time
from typing import TYPE_CHECKING

import h11

from aibridge.logs import get_logger
from aibridge.recording import new_record_id
from aibridge.telemetry import TRACE_HEADERS
from data_plane.body_budget import Hold
from data_plane.dump import Exchange
from data_plane.proxy.auth import Identity
from data_plane.proxy.context import Shared
from data_plane.proxy.h11io import H11Stream, header
from data_plane.proxy.relay import Outcome, bridge_headers, relay
from data_plane.proxy.routes import Route

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = get_logger(__name__)
HANDSHAKE_TIMEOUT = 10.0


def _model(body: bytes) -> str | None:
    """The request's model for the dump path; None files it under passthrough."""
    try:
        doc = json.loads(body) if body else None
    except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
        return None
    model = doc.get("model") if isinstance(doc, dict) else None
    return model if isinstance(model, str) else None


def origin_path(target: bytes) -> str:
    """Path and query of a request target (absolute-form too)."""
    text = target.decode("latin-1")
    if not text.startswith("/"):
        _scheme, _, rest = text.partition("://")
        slash = rest.find("/")
        text = rest[slash:] if slash >= 0 else "/"
    return text


async def provider_request(
    shared: Shared,
    stream: H11Stream,
    request: h11.Request,
    route: Route,
    identity: Identity,
    session: Span | None = None,
) -> None:
    """Serve one provider request through the bridge; the body is still unread.
    `session`: the CONNECT's span, when telemetry is on."""
    hold = Hold(stream.limits.body_budget)  # given back once the request is over
    try:
        await _provider_request(shared, stream, request, route, identity, hold, session)
    finally:
        hold.release()


async def _provider_request(
    shared: Shared,
    stream: H11Stream,
    request: h11.Request,
    route: Route,
    identity: Identity,
    hold: Hold,
    session: Span | None,
) -> None:
    request_id = new_record_id()  # the bridge keeps it as the interception record's id
    declared = header(request, b"content-length")
    body = await stream.read_body_or_refuse(
        int(declared) if declared and declared.isdigit() else None, hold
    )
    if body is None:
        return
    path = origin_path(request.target)
    on_bridge = route.bridge_path(path)
    # Copilot has no key pool: its users' own tokens are the only credential there is.
    pooled_keys = shared.settings.pooled_keys and route.provider_type != "copilot"
    headers = bridge_headers(request, identity, shared.table, request_id, pooled_keys=pooled_keys)
    method = bytes(request.method)
    shared.metrics.mitm_requests.labels(route.provider).inc()
    started = time.perf_counter()
    span = None
    if shared.tracing is not None:
        span, carried = shared.tracing.request(
            session,
            method.decode(),
            path,
            route.provider,
            identity.principal.principal_id,
            request_id,
            request.headers,
        )
        headers = [(k, v) for k, v in headers if k not in TRACE_HEADERS] + carried
    outcome = await _relay(shared, stream, method, on_bridge, headers, body, span)
    shared.metrics.mitm_responses.labels(route.provider, str(outcome.status)).inc()
    # The path without its query: some providers accept keys as query parameters.
    log.info(
        "provider request",
        request_id=request_id,
        provider=route.provider,
        principal=identity.principal.principal_name,
        method=method.decode(),
        path=path.partition("?")[0],
        status=outcome.status,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        **({"failed": outcome.failed} if outcome.failed else {}),
    )
    if shared.dumper is not None:
        exchange = _exchange(route.provider, request_id, method, on_bridge, headers, body, outcome)
        await shared.dumper.dump(exchange)


def _exchange(
    provider: str,
    request_id: str,
    method: bytes,
    target: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    outcome: Outcome,
) -> Exchange:
    """The dump of one provider request as it went to the bridge and came back."""
    return Exchange(
        provider=provider,
        model=_model(body),
        request_id=request_id,
        method=method.decode(),
        target=target,
        request_headers=[(k.decode(), v.decode("latin-1")) for k, v in headers],
        request_body=body,
        status=outcome.status,
        response_headers=[(k.decode(), v.decode("latin-1")) for k, v in outcome.headers],
        response_body=outcome.body,
    )


async def _relay(
    shared: Shared,
    stream: H11Stream,
    method: bytes,
    on_bridge: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    span: Span | None,
) -> Outcome:
    """Relay the request to the bridge, counted in flight and its span answered."""
    shared.metrics.inflight.inc()
    outcome = None
    try:
        hop = shared.bridge
        outcome = await relay(
            stream,
            hop.transport,
            hop.origin,
            method,
            hop.target(on_bridge),
            headers,
            body,
            capture=shared.dumper is not None,
        )
    finally:
        shared.metrics.inflight.dec()
        if shared.tracing is not None and span is not None:
            if outcome is None:  # cancelled: the proxy is stopping
                shared.tracing.answered(span, 0, "cancelled")
            else:
                shared.tracing.answered(span, outcome.status, outcome.failed)
    return outcome


async def serve_tls(
    shared: Shared,
    plain: H11Stream,
    ctx: ssl.SSLContext,
    host: str,
    identity: Identity,
    session: Span | None = None,
) -> None:
    """Terminate the client's TLS for host and serve its requests until it leaves."""
    try:
        await plain.writer.start_tls(ctx, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
    except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
        # Typically a client that does not trust the proxy CA: say so, it is the usual fix.
        log.warning(
            "TLS handshake with the client failed (does it trust the proxy CA?)",
            host=host,
            error=type(exc).__name__,
        )
        return
    stream = plain.renewed()
    while True:
        try:
            event = await stream.next_event()
        except h11.RemoteProtocolError as exc:
            shared.metrics.refused.labels("bad_request").inc()
            await stream.malformed(exc)
            return
        if not isinstance(event, h11.Request):
            return
        route = shared.table.route(host)
        if route is None:
            await stream.error(421, f"{host} is no longer intercepted; reconnect", close=True)
            return
        await provider_request(shared, stream, event, route, identity, session)
        if not stream.next_cycle():
            return
