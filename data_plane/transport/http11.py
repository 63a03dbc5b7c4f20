"""One HTTP/1.1 connection: the request head, httptools parsing, the body as it arrives.

Responses are parsed by httptools (the parser uvicorn already uses). One exchange at a
time; the pool decides when a connection is reused (`reusable`) or closed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import httptools
import httpx

from data_plane.transport.models import Headers, Origin, Sink, needs_length

_HIGH_WATER = 256 * 1024  # body bytes buffered before reading pauses


def encode_head(method: str, target: bytes, host: bytes, headers: Headers, body: bytes) -> bytes:
    """The request head: `headers` go out as given, after Host and before Content-Length
    (added when `needs_length`), as httpx would send them."""
    head = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method.encode(), target, host)]
    head += [b"%s: %s\r\n" % pair for pair in headers]
    if needs_length(method, body):
        head.append(b"content-length: %d\r\n" % len(body))
    head.append(b"\r\n")
    return b"".join(head)


class HTTP11Connection(asyncio.Protocol):
    """One upstream connection; one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.transport: asyncio.Transport | None = None
        # Kept: looking the running loop up costs a getpid() system call on Python 3.11,
        # and `wait` runs once per response head and per chunk of a stream.
        self.loop = loop
        self.origin: Origin = (b"", "", 0)  # set by whoever opened it
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.active = False
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        # The read timeout: one timer per connection, re-armed only when it fires early,
        # not one per wait (an SSE stream waits once per chunk).
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.reset()

    def reset(self) -> None:
        """Ready for the next exchange."""
        self.status = 0
        self.headers: Headers = []
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
        self.sink: Sink | None = None  # takes the body in the read callback (`relay`)
        self.sink_timeout: float | None = None
        self.held: Awaitable[None] | None = None  # the sink is full until this is over

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.active and not self.complete and self.error is None:
            if self.headers_done and self.eof_body and exc is None:
                self.complete = True
            else:
                self.error = _lost(exc, self.headers_done)
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        if self._drained is None or self._drained.done():
            self._drained = self.loop.create_future()

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
        sink = self.sink
        if sink is not None and self.held is None and self.chunks:
            self.flush_to(sink)
        elif self.buffered > _HIGH_WATER:
            self._pause()

    def _pause(self) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

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
        if self.head:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.sink is None:
            self._wake()
        # else: the pieces of this read go to the sink as one, once it is parsed

    def flush_to(self, sink: Sink) -> None:
        """What one read brought, handed to the sink in one piece."""
        if self.sink_timeout is not None:
            self._deadline = self.loop.time() + self.sink_timeout  # the read timeout
        held = sink(self.take())
        if held is not None:  # the consumer is full: read no more until it is not
            self.held = held
            self._pause()
            self._wake()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive() and not self.head
        self._wake()

    # used by the pool

    def _fail(self, error: httpx.TransportError) -> None:
        if self.error is None:
            self.error = error
        self.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, seconds: float | None) -> None:
        """Until the next event (headers, body bytes, end, error), or `seconds` without one."""
        loop = self.loop
        self._waiter = loop.create_future()
        if seconds is not None:
            self._deadline = loop.time() + seconds
            if self._timer is None:
                self._timer = loop.call_at(self._deadline, self._timed)
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _timed(self) -> None:
        """The timer: the waiter's deadline has passed (it fails), or it moved (re-armed)."""
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # nobody waiting: the next wait arms it again
        loop = waiter.get_loop()
        if loop.time() >= self._deadline:
            waiter.set_exception(httpx.ReadTimeout("timed out waiting for the upstream"))
        else:
            self._timer = loop.call_at(self._deadline, self._timed)

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

    async def response_head(self, seconds: float | None) -> None:
        """Until the response's status and headers are in (1xx skipped)."""
        while not self.headers_done:
            if self.error is not None:
                raise self.error
            await self.wait(seconds)

    def take(self) -> bytes:
        """Everything buffered so far (empty when nothing is)."""
        data = self.chunks.popleft() if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.held is None:
            self.resume()
        return data

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()


def _lost(exc: Exception | None, headers_done: bool) -> httpx.TransportError:
    """What a connection lost in the middle of an exchange means for the caller."""
    if exc is not None:
        return httpx.ReadError(str(exc) or type(exc).__name__)
    if headers_done:
        return httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body"
        )
    return httpx.RemoteProtocolError("Server disconnected without sending a response.")


class ResponseBody(httpx.AsyncByteStream):
    """The body of one response as it arrives; `aclose` hands the connection back once."""

    def __init__(
        self,
        conn: HTTP11Connection,
        timeout: float | None,
        release: Callable[[HTTP11Connection], None],
    ) -> None:
        self._conn = conn
        self._timeout = timeout
        self._release: Callable[[HTTP11Connection], None] | None = release

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

    async def relay(self, sink: Sink) -> None:
        """The body handed to `sink` piece by piece (`models.Reply.relay`): what is already
        buffered first, then each piece from the read callback as it is parsed; while a
        wait `sink` returned is not over, reading pauses and pieces are buffered."""
        conn = self._conn
        conn.sink_timeout = self._timeout
        conn.sink = sink
        try:
            while True:
                held = conn.held
                if held is not None:
                    await held
                    conn.held = None
                    if not conn.chunks:
                        conn.resume()
                elif conn.chunks:
                    conn.flush_to(sink)
                elif conn.complete:
                    return
                elif conn.error is not None:
                    raise conn.error
                else:
                    await conn.wait(self._timeout)
        finally:
            conn.sink = None
            conn.held = None

    async def aclose(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release(self._conn)
