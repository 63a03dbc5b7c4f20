"""A lean HTTP/1.1 keep-alive transport for httpx, for the bridge's upstream calls.

httpcore's connection pool scans every pooled connection on each request and on each
release (and asks each idle one whether its socket is readable), so with tens of
requests in flight most of the bridge's CPU went to pool bookkeeping. This transport
keeps idle connections per origin in a stack: taking and returning one is O(1). A
connection the server closes while idle is noticed by the event loop
(`connection_lost`) and never reused. Responses are parsed by httptools (the parser
uvicorn already uses); bodies are handed over raw, still content-encoded, as they
arrive, with flow control (reading pauses while the consumer lags).

HTTP/2: https connections offer ALPN ["h2", "http/1.1"]. The first time a server picks
h2, the origin is remembered and from then on served through one shared
`httpx.AsyncHTTPTransport(http2=True)`: HTTP/2 multiplexes every request to an origin
over one connection, so httpcore's pool stays a connection or two deep and its scans
cost nothing. Everything else, cleartext http included (never h2c), stays on the
HTTP/1.1 path above.

Failures are httpx exceptions (ConnectError, ConnectTimeout, ReadTimeout, WriteTimeout,
ReadError, RemoteProtocolError, PoolTimeout), so callers see what httpx would raise.
Proxies from the environment stay with httpx's own transports (see `make_http_client`).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NamedTuple, cast

import httptools
import httpx

_HIGH_WATER = 256 * 1024  # body bytes buffered before reading pauses
_Origin = tuple[bytes, str, int]  # scheme, host, port
_ALPN = ["h2", "http/1.1"]
# Connection-specific headers HTTP/2 forbids (RFC 9113 8.2.2); httpcore turns Host into
# :authority. TE is allowed only as "trailers".
_NOT_H2 = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)


class Timeouts(NamedTuple):
    connect: float | None
    read: float | None
    write: float | None
    pool: float | None


DEFAULT_TIMEOUTS = Timeouts(connect=10.0, read=600.0, write=60.0, pool=30.0)


def direct_transport(client: httpx.AsyncClient, url: str) -> UpstreamTransport | None:
    """The client's `UpstreamTransport` when it serves `url` (no proxy applies), else None."""
    transport = client._transport_for_url(httpx.URL(url))
    return transport if isinstance(transport, UpstreamTransport) else None


def origin_of(url: str) -> tuple[_Origin, bytes]:
    """(scheme, host, port) and the path prefix of an absolute http(s) URL."""
    parsed = httpx.URL(url)
    scheme = parsed.raw_scheme
    port = parsed.port or (443 if scheme == b"https" else 80)
    return (scheme, parsed.raw_host.decode("ascii"), port), parsed.raw_path.split(b"?", 1)[0]


def origin_host(origin: _Origin) -> bytes:
    """The Host header for an origin (the port only when it is not the default)."""
    scheme, host, port = origin
    name = f"[{host}]" if ":" in host else host
    default = 443 if scheme == b"https" else 80
    return (name if port == default else f"{name}:{port}").encode("ascii")


class _UseHTTP2(Exception):
    """The server chose h2 on a TLS connection the HTTP/1.1 path opened."""


class _Connection(asyncio.Protocol):
    """One upstream connection; one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.active = False
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.informational = False
        self.eof_body = False  # no length and not chunked: the body ends with the connection
        self.head = False
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.error: httpx.TransportError | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.active and not self.complete and self.error is None:
            if self.headers_done and self.eof_body and exc is None:
                self.complete = True
            elif exc is not None:
                self.error = httpx.ReadError(str(exc) or type(exc).__name__)
            elif self.headers_done:
                self.error = httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body"
                )
            else:
                self.error = httpx.RemoteProtocolError(
                    "Server disconnected without sending a response."
                )
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        if not self.active or self.complete:
            self.close()  # bytes nobody asked for: the connection is not reusable
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"invalid HTTP response: {exc}"))
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self.informational = True  # 100 Continue and friends: wait for the real one
            self.headers = []
            return
        self.status = status
        self.headers_done = True
        chunked = length = False
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length":
                length = True
            elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        self.eof_body = not (chunked or length or status in (204, 304))
        if self.head:
            self.complete = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if not self.head:
            self.chunks.append(body)
            self.buffered += len(body)
            self._wake()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive() and not self.head
        self._wake()

    # used by the transport

    def _fail(self, error: httpx.TransportError) -> None:
        if self.error is None:
            self.error = error
        self.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, seconds: float | None) -> None:
        """Until the next event (headers, body bytes, end, error)."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(seconds):
                await self._waiter
        except TimeoutError:
            raise httpx.ReadTimeout("timed out waiting for the upstream") from None
        finally:
            self._waiter = None

    async def send(self, head: bytes, body: bytes, seconds: float | None) -> None:
        assert self.transport is not None
        # Not head + body: that would copy a large body (uvloop writes the two with one writev).
        self.transport.writelines((head, body))
        drained = self._drained
        if drained is not None and not drained.done():
            try:
                async with asyncio.timeout(seconds):
                    await drained
            except TimeoutError:
                raise httpx.WriteTimeout("timed out sending the request") from None
        if self.closed and self.error is not None:
            raise self.error

    def take(self) -> bytes:
        """Everything buffered so far (empty when nothing is)."""
        data = self.chunks.popleft() if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return data

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Body(httpx.AsyncByteStream):
    def __init__(
        self, pool: UpstreamTransport, conn: _Connection, origin: _Origin, timeout: float | None
    ) -> None:
        self._pool = pool
        self._conn = conn
        self._origin = origin
        self._timeout = timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.chunks:
                yield conn.take()
            elif conn.complete:
                return
            elif conn.error is not None:
                raise conn.error
            else:
                await conn.wait(self._timeout)

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self._origin, self._conn)


class UpstreamTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive; idle connections kept per origin, last in first out."""

    def __init__(
        self,
        *,
        max_connections: int = 2000,
        max_keepalive: int = 500,
        keepalive_expiry: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
    ) -> None:
        self.timeouts = timeouts
        self._ssl = ssl_context
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._idle_count = 0
        self._max_keepalive = max_keepalive
        self._expiry = keepalive_expiry
        self._max_connections = max_connections
        self._slots: asyncio.Semaphore | None = None
        self._busy: set[_Connection] = set()
        self._h2_origins: set[_Origin] = set()
        self._h2: httpx.AsyncHTTPTransport | None = None
        self._alpn = False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context(trust_env=True)
        if not self._alpn:  # httpcore may set its own order later; we check what was chosen
            self._ssl.set_alpn_protocols(_ALPN)
            self._alpn = True
        return self._ssl

    def _http2(self) -> httpx.AsyncHTTPTransport:
        if self._h2 is None:
            self._h2 = httpx.AsyncHTTPTransport(
                verify=self._ssl_context(),
                http2=True,
                limits=httpx.Limits(
                    max_connections=self._max_connections,
                    max_keepalive_connections=self._max_keepalive,
                    keepalive_expiry=self._expiry,
                ),
            )
        return self._h2

    async def _send_http2(self, request: httpx.Request, timeouts: Timeouts) -> httpx.Response:
        request.extensions["timeout"] = timeouts._asdict()
        request.headers = httpx.Headers(
            [
                (k, v)
                for k, v in request.headers.raw
                if k.lower() not in _NOT_H2 and (k.lower() != b"te" or v.lower() == b"trailers")
            ]
        )
        return await self._http2().handle_async_request(request)

    async def _connect(self, origin: _Origin, seconds: float | None) -> _Connection:
        scheme, host, port = origin
        tls = scheme == b"https"
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(seconds):
                _, conn = await loop.create_connection(
                    _Connection,
                    host,
                    port,
                    ssl=self._ssl_context() if tls else None,
                    server_hostname=host if tls else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        if tls and conn.transport is not None:
            tls_object = conn.transport.get_extra_info("ssl_object")
            if tls_object is not None and tls_object.selected_alpn_protocol() == "h2":
                self._h2_origins.add(origin)
                conn.close()
                raise _UseHTTP2
        sock = conn.transport.get_extra_info("socket") if conn.transport else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    async def _acquire(self, origin: _Origin, seconds: float | None) -> _Connection:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            self._idle_count -= 1
            if conn.closed or now - conn.idle_since > self._expiry:
                conn.close()
                continue
            return conn
        return await self._connect(origin, seconds)

    def release(self, origin: _Origin, conn: _Connection) -> None:
        self._busy.discard(conn)
        conn.active = False
        if conn.reusable() and self._idle_count < self._max_keepalive:
            conn._reset()
            conn.idle_since = time.monotonic()
            self._idle.setdefault(origin, []).append(conn)
            self._idle_count += 1
        else:
            conn.close()
        if self._slots is not None:
            self._slots.release()

    async def exchange(
        self, origin: _Origin, method: str, head: bytes, body: bytes, timeouts: Timeouts
    ) -> _Connection:
        """Send one request; return once the response head is in.

        The caller owns the connection until it calls `release(origin, conn)`.
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_connections)
        try:
            async with asyncio.timeout(timeouts.pool):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no upstream connection available") from None
        conn: _Connection | None = None
        try:
            conn = await self._acquire(origin, timeouts.connect)
            conn.active = True
            conn.head = method == "HEAD"
            self._busy.add(conn)
            await conn.send(head, body, timeouts.write)
            while not conn.headers_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(timeouts.read)
        except BaseException:
            if conn is not None:
                conn.close()
                self._busy.discard(conn)
                conn.active = False
            self._slots.release()
            raise
        return conn

    async def request(
        self,
        origin: _Origin,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeouts: Timeouts | None = None,
    ) -> tuple[int, list[tuple[bytes, bytes]], AsyncIterator[bytes], Callable[[], Awaitable[None]]]:
        """The bridge's own path (no httpx Request/Response): status, raw headers, body
        chunks as they arrive, and a close that returns the connection to the pool.

        `headers` go out as given, after Host and before Content-Length (added when
        there is a body or the method carries one), as httpx would send them.
        """
        head = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method.encode(), target, origin_host(origin))]
        head += [b"%s: %s\r\n" % pair for pair in headers]
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(b"content-length: %d\r\n" % len(body))
        head.append(b"\r\n")
        timeouts = timeouts or self.timeouts
        if origin not in self._h2_origins:
            try:
                conn = await self.exchange(origin, method, b"".join(head), body, timeouts)
            except _UseHTTP2:
                pass
            else:
                body_stream = _Body(self, conn, origin, timeouts.read)
                return conn.status, conn.headers, body_stream.__aiter__(), body_stream.aclose
        scheme, host, port = origin
        url = httpx.URL(scheme=scheme.decode(), host=host, port=port, raw_path=target)
        request = httpx.Request(method, url, headers=[(b"host", origin_host(origin)), *headers])
        if body or method in ("POST", "PUT", "PATCH"):
            request.headers["content-length"] = str(len(body))
        request.stream = httpx.ByteStream(body)
        response = await self._send_http2(request, timeouts)
        stream = cast(httpx.AsyncByteStream, response.stream)
        return response.status_code, response.headers.raw, stream.__aiter__(), response.aclose

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        port = url.port or (443 if scheme == b"https" else 80)
        origin: _Origin = (scheme, url.raw_host.decode("ascii"), port)
        ext = request.extensions.get("timeout", {})
        timeouts = Timeouts(ext.get("connect"), ext.get("read"), ext.get("write"), ext.get("pool"))
        if origin in self._h2_origins:
            return await self._send_http2(request, timeouts)
        body = await request.aread()
        head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), url.raw_path)]
        chunked = False
        for name, value in request.headers.raw:
            head.append(b"%s: %s\r\n" % (name, value))
            chunked = chunked or (
                name.lower() == b"transfer-encoding" and b"chunked" in value.lower()
            )
        head.append(b"\r\n")
        if chunked:  # a streamed request body, read whole: send it as one chunk
            body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
        try:
            conn = await self.exchange(origin, request.method, b"".join(head), body, timeouts)
        except _UseHTTP2:
            return await self._send_http2(request, timeouts)
        return httpx.Response(
            conn.status,
            headers=conn.headers,
            stream=_Body(self, conn, origin, timeouts.read),
            extensions={"http_version": b"HTTP/1.1"},
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
        if self._h2 is not None:
            await self._h2.aclose()
            self._h2 = None
