"""UpstreamTransport: the connection pool and its one request entry point.

`request(origin, method, target, headers, body)` is the bridge's own path (no httpx
Request/Response on the way) and the only one: it picks the route for the origin
(through an environment proxy, over HTTP/2, or over a pooled HTTP/1.1 connection), and
`handle_async_request` adapts httpx's Request/Response to it, so an `httpx.AsyncClient`
built on this transport (the Bedrock client's) takes the same routes.

HTTP/1.1 connections are held per origin in a stack, last in first out; at most
`max_connections` are open at once (waiting longer than the pool timeout is a
PoolTimeout) and at most `max_keepalive` idle ones are kept, for `keepalive_expiry`
seconds.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator

import httpx

from data_plane.transport.connection import Connector
from data_plane.transport.delegated import Delegated, via_httpx
from data_plane.transport.http2 import HTTP2Fallback
from data_plane.transport.http11 import HTTP11Connection, ResponseBody, encode_head
from data_plane.transport.models import (
    DEFAULT_TIMEOUTS,
    Headers,
    Origin,
    Reply,
    Timeouts,
    origin_host,
    origin_of,
)
from data_plane.transport.proxy import EnvProxies

# Framing headers of an httpx Request that `request` writes itself.
_FRAMING = frozenset((b"host", b"content-length", b"transfer-encoding"))


class UpstreamTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive, HTTP/2 where the server picks it, proxies from the
    environment with `trust_env`."""

    def __init__(
        self,
        *,
        max_connections: int = 2000,
        max_keepalive: int = 500,
        keepalive_expiry: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        trust_env: bool = False,
    ) -> None:
        self.timeouts = timeouts
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive,
            keepalive_expiry=keepalive_expiry,
        )
        self._connector = Connector(ssl_context)
        self._http2 = HTTP2Fallback(self._connector.ssl_context, limits)
        self._proxies = EnvProxies(limits, trust_env=trust_env)
        self._idle: dict[Origin, list[HTTP11Connection]] = {}
        self._idle_count = 0
        self._max_keepalive = max_keepalive
        self._expiry = keepalive_expiry
        self._max_connections = max_connections
        self._slots: asyncio.Semaphore | None = None
        self._busy: set[HTTP11Connection] = set()

    async def request(
        self,
        origin: Origin,
        method: str,
        target: bytes,
        headers: Headers,
        body: bytes,
        timeouts: Timeouts | None = None,
        *,
        host: bytes | None = None,
    ) -> Reply:
        """Send one request; return once the response head is in.

        `headers` go out as given, after Host (`host`, else the origin's) and before
        Content-Length (added when there is a body or the method carries one).
        """
        timeouts = timeouts or self.timeouts
        host = host or origin_host(origin)
        proxy = self._proxies.transport_for(origin)
        if proxy is None and not self._http2.serves(origin):
            head = encode_head(method, target, host, headers, body)
            conn = await self._exchange(origin, method, head, body, timeouts)
            if conn is not None:
                stream = ResponseBody(conn, timeouts.read, self.release)
                return Reply(
                    conn.status, conn.headers, aiter(stream), stream.aclose, relay=stream.relay
                )
            self._http2.remember(origin)
        delegated = Delegated(origin, method, target, [(b"host", host), *headers], body, timeouts)
        if proxy is not None:
            return await via_httpx(proxy, delegated)
        return await self._http2.send(delegated)

    async def _exchange(
        self, origin: Origin, method: str, head: bytes, body: bytes, timeouts: Timeouts
    ) -> HTTP11Connection | None:
        """Send the request on a pooled connection and wait for the response head; None
        when the origin turned out to pick h2. The caller owns the connection until
        `release`."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_connections)
        if self._slots.locked():  # wait for a slot, within the pool timeout
            try:
                async with asyncio.timeout(timeouts.pool):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no upstream connection available") from None
        else:  # a slot is free: taken at once, no timer armed and cancelled per request
            await self._slots.acquire()
        conn: HTTP11Connection | None = None
        try:
            conn = await self._acquire(origin, timeouts.connect)
            if conn is None:
                self._slots.release()
                return None
            conn.active = True
            conn.head = method == "HEAD"
            self._busy.add(conn)
            await conn.send(head, body, timeouts.write)
            await conn.response_head(timeouts.read)
        except BaseException:
            if conn is not None:
                self._discard(conn)
            self._slots.release()
            raise
        return conn

    async def _acquire(self, origin: Origin, seconds: float | None) -> HTTP11Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            self._idle_count -= 1
            if conn.closed or now - conn.idle_since > self._expiry:
                conn.close()
                continue
            return conn
        return await self._connector.connect(origin, seconds)

    def _discard(self, conn: HTTP11Connection) -> None:
        conn.close()
        self._busy.discard(conn)
        conn.active = False

    def release(self, conn: HTTP11Connection) -> None:
        """The exchange on `conn` is over: keep it idle if it can be reused, else close it."""
        self._busy.discard(conn)
        conn.active = False
        if conn.reusable() and self._idle_count < self._max_keepalive:
            conn.reset()
            conn.idle_since = time.monotonic()
            self._idle.setdefault(conn.origin, []).append(conn)
            self._idle_count += 1
        else:
            conn.close()
        if self._slots is not None:
            self._slots.release()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.raw_scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        origin, _ = origin_of(url)
        ext = request.extensions.get("timeout", {})
        timeouts = Timeouts(ext.get("connect"), ext.get("read"), ext.get("write"), ext.get("pool"))
        host = next((v for k, v in request.headers.raw if k.lower() == b"host"), None)
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in _FRAMING]
        body = await request.aread()
        reply = await self.request(
            origin, request.method, url.raw_path, headers, body, timeouts, host=host
        )
        return httpx.Response(
            reply.status,
            headers=reply.headers,
            stream=_ReplyStream(reply),
            extensions={"http_version": reply.http_version},
        )

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        self._idle_count = 0
        for conn in list(self._busy):
            conn.close()
        self._busy.clear()
        await self._http2.aclose()
        await self._proxies.aclose()


class _ReplyStream(httpx.AsyncByteStream):
    """A Reply's body as httpx's response stream."""

    def __init__(self, reply: Reply) -> None:
        self._reply = reply

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._reply.chunks:
            yield chunk

    async def aclose(self) -> None:
        await self._reply.close()
