"""Client connection limits of the bridge's HTTP server (uvicorn's httptools protocol).

uvicorn has no deadline for a request's headers, httptools no cap on their size, and
nothing stops idle sockets from using up the process's file descriptors. Here, with a
`ConnectionGuard` per server:

- at most `max_connections` connections are open (default: half of RLIMIT_NOFILE, the
  other half left for upstream sockets, the config-service channel and dump files).
  A connection past the cap makes room by closing the connection that has been waiting
  longest for a request's headers (idle keep-alive, slowloris); when every connection
  has a request in flight, the new one gets a 503 and is closed instead;
- a request's headers must be complete within `header_timeout` of the connection opening
  or of the previous response ending (the rest of an unread body counts against it),
  checked by one sweep at most a second apart: past it, a 408 if part of a head arrived,
  else a plain close;
- a request line and headers over `max_header_bytes` get a 431 and a close; the parser is
  never fed more of a head than that (it would buffer a huge header value whole).

Each request's scope also carries a `ChunkWriter` (`asgi.BODY`): the relay of a streamed
answer writes its body pieces with it, straight to the socket in uvicorn's chunked framing,
instead of through uvicorn's `send` per piece (its checks were most of a relayed chunk's
cost in our code). It keeps uvicorn's backpressure: past the transport's high-water mark the
writer hands back uvicorn's own drain wait, and the relay reads no more from the upstream
until the client has taken the bytes.

The refusals are written straight to the socket in the generic (OpenAI) error format: no
request was parsed, so there is no provider to answer for.
"""

from __future__ import annotations

import asyncio
import resource
import weakref
from collections.abc import Awaitable
from typing import Any, ClassVar

from prometheus_client import Counter
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from data_plane.bridge.asgi import BODY, BODY_IN, LOST, ConnectionLost
from data_plane.bridge.providers import error_body
from data_plane.bridge.settings import ConnectionLimits

# Why the guard closed a connection (the label of aibridged_connections_closed_total).
REASONS = ("evicted_idle", "over_capacity", "header_timeout", "header_too_large")


def default_max_connections() -> int:
    """Half of this process's soft file descriptor limit."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(1, soft // 2)


class ConnectionGuard:
    """One server's limits, and its connections waiting for a head with their deadlines,
    longest-waiting first (one sweep timer for all, not a timer per request)."""

    def __init__(self, limits: ConnectionLimits, closed: Counter) -> None:
        self.max_connections = limits.max_connections or default_max_connections()
        self.header_timeout = limits.header_timeout
        self.max_header_bytes = limits.max_header_bytes
        self.waiting: dict[GuardedProtocol, float] = {}
        self.closed = {reason: closed.labels(reason) for reason in REASONS}
        self._sweep_every = min(1.0, self.header_timeout / 4)
        self._sweeper: asyncio.TimerHandle | None = None

    def protocol(self) -> type[GuardedProtocol]:
        """The protocol class uvicorn builds connections with, bound to this guard."""
        guard = self

        class BridgeProtocol(GuardedProtocol):
            pass

        BridgeProtocol.guard = guard
        return BridgeProtocol

    def wait(self, conn: GuardedProtocol) -> None:
        """`conn` awaits a head from now on, as the newest waiting connection."""
        self.waiting.pop(conn, None)
        self.waiting[conn] = conn.loop.time() + self.header_timeout
        if self._sweeper is None:
            self._sweeper = conn.loop.call_later(self._sweep_every, self._sweep, conn.loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        while self.waiting:
            conn, deadline = next(iter(self.waiting.items()))
            if deadline > now:
                break
            del self.waiting[conn]
            conn.head_timed_out()
        self._sweeper = (
            loop.call_later(self._sweep_every, self._sweep, loop) if self.waiting else None
        )


class ChunkWriter:
    """`asgi.DirectBody` for one uvicorn request cycle (HTTP/1.1 chunked framing, as its
    `send` writes a body message). It holds the cycle weakly: the cycle's scope holds the
    writer, and a reference cycle per request would leave every request's scope and cycle
    to the garbage collector."""

    __slots__ = ("_cycle",)

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._cycle = weakref.ref(cycle)

    def usable(self) -> bool:
        c = self._cycle()
        return (
            c is not None
            and c.response_started
            and not c.response_complete
            and c.chunked_encoding is True
            and c.scope["method"] != "HEAD"
        )

    def write(self, body: bytes) -> Awaitable[None] | None:
        c = self._cycle()
        if c is None or c.disconnected or c.transport.is_closing():
            # As uvicorn's send: the bytes of a gone client are dropped (and it may run in
            # the upstream connection's read callback, where a write error must not land).
            return None
        c.transport.write(b"%x\r\n%s\r\n" % (len(body), body))
        return c.flow.drain() if c.flow.write_paused else None


class GuardedProtocol(HttpToolsProtocol):
    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # the parser is before the end of a request's headers
        self._head_bytes = 0  # of the head being parsed (under-counted after a pipelined one)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        if len(self.connections) > guard.max_connections:
            if not guard.waiting:
                self._refuse("over_capacity", 503, "too many connections, try again")
                return
            oldest = next(iter(guard.waiting))
            del guard.waiting[oldest]  # now: the next connection accepted evicts another
            oldest.transport.close()
            guard.closed["evicted_idle"].inc()
        guard.wait(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.waiting.pop(self, None)
        super().connection_lost(exc)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            extensions: Any = cycle.scope["extensions"]  # ours: uvicorn types them as dicts
            callback = extensions[LOST].callback
            if callback is not None:
                callback()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        extensions: Any = {LOST: ConnectionLost(self.loop)}
        self.scope["extensions"] = extensions

    def data_received(self, data: bytes) -> None:
        limit = self.guard.max_header_bytes
        while self._in_head:
            # The parser is fed a head up to the cap only: it would buffer a huge value whole.
            room = limit - self._head_bytes
            piece, data = (data, b"") if len(data) <= room else (data[:room], data[room:])
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self.transport.is_closing():
                return
            if self._in_head and self._head_bytes >= limit:
                self._refuse("header_too_large", 431, f"request headers exceed {limit} bytes")
                return
            if not data:
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self.guard.waiting.pop(self, None)
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # not an upgrade
            extensions: Any = self.scope["extensions"]
            extensions[BODY] = ChunkWriter(cycle)

    def on_message_complete(self) -> None:
        self._in_head = True
        extensions: Any = self.scope["extensions"]  # ours (on_message_begin)
        extensions[BODY_IN] = True
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # No pipelined request started: the next head is awaited from now on.
        if self.cycle.response_complete and not self.transport.is_closing():
            self.guard.wait(self)

    def head_timed_out(self) -> None:
        if self._in_head and self._head_bytes:
            self._refuse("header_timeout", 408, "request headers not received in time")
        else:
            self.guard.closed["header_timeout"].inc()
            self.transport.close()

    def _refuse(self, reason: str, status: int, message: str) -> None:
        self.guard.closed[reason].inc()
        body = error_body(None, status, message, reason)
        self.transport.write(
            STATUS_LINE[status]
            + b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
            + (b"retry-after: 1\r\n" if status == 503 else b"")
            + b"connection: close\r\n\r\n"
            + body
        )
        self.transport.close()
