"""The proxy's listening side: one handler per client connection.

A connection carries, in any order and with keep-alive:
- `CONNECT host:port`: authenticated; a provider host is intercepted (MITM), any other
  host on an allowed port is tunnelled to a checked address (private ranges refused);
- absolute-form `GET http://host/...` (HTTP_PROXY clients): the same rules, request by
  request: provider hosts go to the bridge, other hosts are forwarded;
- origin-form `GET /...`: the proxy's own endpoints (CA certificate, health, metrics).
Ports are only checked for destinations the proxy dials: an intercepted host is never
dialled (its requests go to the bridge), whatever port the client named.

At most `max_connections` client connections are held (the default leaves room below the
fd limit for the upstream sockets): a new one past it takes the place of the connection
that has waited longest for a request head (a fresh, idle or slowloris connection, never
one being served), or, when every connection is busy, gets a quick 503 and is closed.
"""

from __future__ import annotations

import asyncio
import json
from typing import cast
from urllib.parse import urlsplit

import h11
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aibridge.logs import get_logger
from data_plane.body_budget import BodyBudget, Hold
from data_plane.errors import (
    Blocked,
    BodyLate,
    BudgetFull,
    ClientGone,
    DialError,
    Silent,
    TooLarge,
)
from data_plane.proxy.auth import REALM, Identity, authenticate
from data_plane.proxy.context import Shared
from data_plane.proxy.h11io import H11Stream, Limits, Waiting, header
from data_plane.proxy.intercept import provider_request, serve_tls
from data_plane.proxy.relay import passable, relay
from data_plane.proxy.tunnel import pipe

log = get_logger(__name__)

_BUSY_BODY = json.dumps(
    {"error": {"type": "proxy_error", "message": "the proxy is at its connection limit"}}
).encode()
# Written raw, without reading the request: the answer must cost nothing.
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
) % (len(_BUSY_BODY), _BUSY_BODY)


def split_authority(authority: str, default_port: int) -> tuple[str, int] | None:
    """host and port of `host[:port]` / `[v6][:port]`; None when malformed."""
    try:
        parts = urlsplit("//" + authority)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host or parts.username is not None or parts.path or parts.query:
        return None
    return host.lower().rstrip("."), port if port is not None else default_port


class FrontDoor:
    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        s = shared.settings
        budget = BodyBudget(s.body_buffer_bytes, s.body_timeout)
        self.limits = Limits(s.idle_timeout, s.header_timeout, s.max_header_bytes, budget)
        self.max_connections = s.max_connections
        self._connections: dict[asyncio.Task[object], asyncio.StreamWriter] = {}
        self._waiting = Waiting()

    async def close_all(self, grace: float = 1.0) -> None:
        """End every connection (on shutdown): drop the sockets, then cancel stragglers."""
        for writer in self._connections.values():
            writer.transport.abort()  # handlers see the error and unwind by themselves
        tasks = list(self._connections)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _admit(self) -> bool:
        """Room for one more connection (evicting the longest-waiting one if need be)."""
        if len(self._connections) < self.max_connections:
            return True
        closed = self.shared.metrics.connections_closed
        if self._waiting.evict_oldest():
            closed.labels("evicted").inc()
            return True
        closed.labels("over_capacity").inc()
        return False

    def _forget(self, task: asyncio.Task[object]) -> None:
        self._connections.pop(task, None)
        self.shared.metrics.client_connections.set(len(self._connections))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._admit():
            writer.write(BUSY)
            writer.close()  # flushes the few bytes, then closes; nobody waits for it
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        self.shared.metrics.client_connections.set(len(self._connections))
        task.add_done_callback(self._forget)
        stream = H11Stream(reader, writer, self.limits, self._waiting)
        try:
            await self._serve(stream)
        except h11.RemoteProtocolError as exc:
            self.shared.metrics.refused.labels("bad_request").inc()
            await stream.malformed(exc)
        except Silent:
            self.shared.metrics.connections_closed.labels("silent").inc()
        except (ConnectionError, OSError, ClientGone, TooLarge, BudgetFull, BodyLate):
            pass  # the client left (or sent a body too large, too late, or past the budget
            # to a refusal): just close
        finally:
            await stream.close()

    async def _serve(self, stream: H11Stream) -> None:
        while True:
            event = await stream.next_event()
            if not isinstance(event, h11.Request):
                return
            if event.method == b"CONNECT":
                if await self._connect(stream, event):
                    return  # the connection now belongs to a tunnel or a MITM session
            elif event.target.startswith(b"/"):
                await stream.read_body()
                await self._local(stream, event)
            else:
                await self._absolute(stream, event)
            if not stream.next_cycle():
                return

    async def _refuse(self, stream: H11Stream, status: int, reason: str, message: str) -> None:
        self.shared.metrics.refused.labels(reason).inc()
        extra = [("proxy-authenticate", REALM)] if status == 407 else None
        await stream.error(status, message, headers=extra)

    async def _identity(self, stream: H11Stream, request: h11.Request) -> Identity | None:
        identity = authenticate(self.shared.table, header(request, b"proxy-authorization"))
        if isinstance(identity, str):
            await self._refuse(stream, 407, "auth", identity)
            return None
        return identity

    async def _connect(self, stream: H11Stream, request: h11.Request) -> bool:
        """Handle a CONNECT; True when the connection was handed over."""
        await stream.next_event()  # its EndOfMessage: a CONNECT has no body
        target = split_authority(request.target.decode("latin-1"), 443)
        if target is None:
            await self._refuse(stream, 400, "bad_request", "CONNECT needs host:port")
            return False
        identity = await self._identity(stream, request)
        if identity is None:
            return False
        host, port = target
        if self.shared.table.route(host) is not None:
            await self._mitm(stream, host, port, identity)
            return True
        return await self._tunnel(stream, host, port, identity)

    async def _mitm(self, stream: H11Stream, host: str, port: int, identity: Identity) -> None:
        """Terminate the client's TLS to an intercepted host and serve its requests."""
        shared = self.shared
        # The leaf first, so the handshake can start as soon as the client sends.
        ctx = await shared.leaves.context(host)
        # Stop reading until start_tls takes over the socket: a ClientHello read into
        # the plain stream's buffer meanwhile would be lost to the TLS layer.
        cast(asyncio.Transport, stream.writer.transport).pause_reading()
        await stream.send(h11.Response(status_code=200, headers=[], reason=b"OK"))
        early, _closed = stream.conn.trailing_data
        if early:  # a ClientHello sent before our 200 cannot be fed to start_tls
            log.warning("client sent TLS data before the CONNECT reply", host=host)
            return
        shared.metrics.connect_sessions.labels("mitm").inc()
        if shared.tracing is None:
            await serve_tls(shared, stream, ctx, host, identity)
            return
        session = shared.tracing.connect(host, port, "mitm", identity.principal.principal_id)
        try:
            await serve_tls(shared, stream, ctx, host, identity, session)
        finally:
            session.end()

    async def _tunnel(self, stream: H11Stream, host: str, port: int, identity: Identity) -> bool:
        """Tunnel the connection to any other allowed destination; False when refused."""
        shared = self.shared
        if port not in shared.settings.allowed_ports:
            await self._refuse(stream, 403, "port", f"port {port} is not allowed")
            return False
        try:
            upstream = await shared.egress.open(host, port)
        except Blocked:
            await self._refuse(stream, 403, "private", "destination not allowed")
            return False
        except DialError:
            await self._refuse(stream, 502, "dial", "cannot reach the destination")
            return False
        await stream.send(h11.Response(status_code=200, headers=[], reason=b"OK"))
        shared.metrics.connect_sessions.labels("tunnel").inc()
        early, _closed = stream.conn.trailing_data
        tunnel_span = (
            shared.tracing.connect(host, port, "tunnel", identity.principal.principal_id)
            if shared.tracing is not None
            else None
        )
        try:
            up, down = await pipe(
                (stream.reader, stream.writer), upstream, early, idle=self.limits.idle_timeout
            )
        finally:
            if tunnel_span is not None:
                tunnel_span.end()
        log.debug("tunnel closed", host=host, port=port, bytes_up=up, bytes_down=down)
        return True

    async def _absolute(self, stream: H11Stream, request: h11.Request) -> None:
        """A plain proxy request, `METHOD http://host[:port]/path`."""
        target = request.target.decode("latin-1")
        scheme, _, rest = target.partition("://")
        authority = rest.split("/", 1)[0].split("?", 1)[0]
        parsed = split_authority(authority, 80) if scheme.lower() == "http" else None
        if parsed is None:
            await stream.read_body()
            await self._refuse(stream, 400, "bad_request", "expected http://host/path or CONNECT")
            return
        identity = await self._identity(stream, request)
        if identity is None:
            await stream.read_body()
            return
        host, port = parsed
        route = self.shared.table.route(host)
        if route is not None:
            await provider_request(self.shared, stream, request, route, identity)
        else:
            await self._forward(stream, request, host, port, authority)

    async def _forward(
        self, stream: H11Stream, request: h11.Request, host: str, port: int, authority: str
    ) -> None:
        hold = Hold(stream.limits.body_budget)  # given back once the request is over
        try:
            await self._forward_held(stream, request, host, port, authority, hold)
        finally:
            hold.release()

    async def _forward_held(
        self,
        stream: H11Stream,
        request: h11.Request,
        host: str,
        port: int,
        authority: str,
        hold: Hold,
    ) -> None:
        shared = self.shared
        body = await stream.read_body_or_refuse(None, hold)
        if body is None:
            return
        if port not in shared.settings.allowed_ports:
            await self._refuse(stream, 403, "port", f"port {port} is not allowed")
            return
        try:
            addresses = await shared.egress.checked_addresses(host, port)
        except Blocked:
            await self._refuse(stream, 403, "private", "destination not allowed")
            return
        except DialError:
            await self._refuse(stream, 502, "dial", "cannot reach the destination")
            return
        # Dial the checked address, not the name again; the origin still sees its Host.
        target = request.target.decode("latin-1")
        path = target[target.index("://") + 3 + len(authority) :] or "/"
        origin = (b"http", str(addresses[0]), port)
        headers = passable(list(request.headers), frozenset({b"host", b"content-length"}))
        outcome = await relay(
            stream,
            shared.origins,
            origin,
            request.method,
            path.encode("latin-1"),
            headers,
            body,
            host=authority.encode(),
        )
        shared.metrics.forwarded.labels(str(outcome.status)).inc()

    async def _local(self, stream: H11Stream, request: h11.Request) -> None:
        shared = self.shared
        path = request.target.decode("latin-1").partition("?")[0]
        if path == "/ca-cert.pem":
            await stream.respond(200, shared.ca_pem, "application/x-pem-file")
        elif path == "/healthz":
            await stream.respond(200, b'{"status":"ok"}')
        elif path == "/readyz":
            table = shared.table
            body = json.dumps({"ready": table.applied, "version": table.version}).encode()
            await stream.respond(200 if table.applied else 503, body)
        elif path == "/metrics":
            await stream.respond(200, generate_latest(shared.metrics.registry), CONTENT_TYPE_LATEST)
        else:
            await stream.error(404, f"not found: {path}")
