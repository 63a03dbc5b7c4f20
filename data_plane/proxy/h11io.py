"""HTTP/1.1 over an asyncio stream pair with h11: events in, events out.

h11 does the parsing (and keep-alive, chunked encoding, CONNECT's protocol switch); this
module only moves bytes between it and the streams, under the connection's `Limits`:
a request head is at most `max_header_bytes` (h11 refuses more: 431) and must arrive
within `header_timeout` of its first byte; request bodies take their bytes from the
proxy-wide `body_budget` as they arrive and must arrive whole within its timeout; a
client silent for `idle_timeout` (before or between requests, in a body) or not reading
for as long is dropped. While a connection waits for a request head it sits in the
`Waiting` registry, from which the front door evicts the longest-waiting one when it is
full. Used on the proxy's plain side and inside every MITM'd TLS connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from http import HTTPStatus

import h11

from data_plane.body_budget import BodyBudget, Hold
from data_plane.errors import BodyLate, BudgetFull, ClientGone, Silent, TooLarge

READ_SIZE = 65536
MAX_BODY = 32 * 1024 * 1024  # the bridge's own limit; refuse early, without buffering more


@dataclass(frozen=True)
class Limits:
    """A client connection's limits (from ProxySettings)."""

    idle_timeout: float
    header_timeout: float
    max_header_bytes: int
    body_budget: BodyBudget  # shared by every connection


class Waiting:
    """Connections waiting for a request head, longest-waiting first."""

    def __init__(self) -> None:
        self._writers: dict[asyncio.StreamWriter, None] = {}

    def enter(self, writer: asyncio.StreamWriter) -> None:
        self._writers.setdefault(writer, None)  # keeps its place when already waiting

    def leave(self, writer: asyncio.StreamWriter) -> None:
        self._writers.pop(writer, None)

    def evict_oldest(self) -> bool:
        """Drop the connection that has waited longest (its handler unwinds); False: none."""
        if not self._writers:
            return False
        writer = next(iter(self._writers))
        self.leave(writer)
        writer.transport.abort()
        return True


class H11Stream:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limits: Limits,
        waiting: Waiting,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.limits = limits
        self.waiting = waiting
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self._head_deadline: float | None = None  # set by the first byte of a request head

    def renewed(self) -> H11Stream:
        """A fresh HTTP/1.1 state on the same streams and limits (after start_tls)."""
        return H11Stream(self.reader, self.writer, self.limits, self.waiting)

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                if isinstance(event, h11.Request):
                    self._head_deadline = None
                    self.waiting.leave(self.writer)
                    if _head_size(event) > self.limits.max_header_bytes:
                        # h11 only bounds a head still incomplete; one read can hold more.
                        raise h11.RemoteProtocolError("head too large", error_status_hint=431)
                return event  # type: ignore[return-value]
            self.conn.receive_data(await self._read())  # b"": end of stream, an event too

    async def _read(self) -> bytes:
        loop = asyncio.get_running_loop()
        in_head = self.conn.their_state is h11.IDLE
        if in_head:
            self.waiting.enter(self.writer)
        timeout = self.limits.idle_timeout
        if in_head and self._head_deadline is not None:
            timeout = self._head_deadline - loop.time()
        try:
            async with asyncio.timeout(timeout):
                # In a head, read no more than the head may hold: h11 buffers at most twice it.
                data = await self.reader.read(
                    min(READ_SIZE, self.limits.max_header_bytes) if in_head else READ_SIZE
                )
        except TimeoutError:
            raise Silent from None
        except (ConnectionError, OSError):
            return b""
        if in_head and data and self._head_deadline is None:
            self._head_deadline = loop.time() + self.limits.header_timeout
        return data

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            self.writer.write(data)
            try:
                async with asyncio.timeout(self.limits.idle_timeout):
                    await self.writer.drain()
            except TimeoutError:
                raise Silent from None  # a client that stopped reading

    async def read_body(self, declared: int | None = None, hold: Hold | None = None) -> bytes:
        """The whole request body (up to MAX_BODY), after the Request event; its bytes are
        taken from the body budget as they arrive, into `hold` (the caller releases it once
        done with the body; without one, held only while reading). BudgetFull past the
        budget, BodyLate past its timeout."""
        if declared is not None and declared > MAX_BODY:
            raise TooLarge
        own = hold is None
        taken = Hold(self.limits.body_budget) if hold is None else hold
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(taken.budget.timeout):
                while True:
                    event = await self.next_event()
                    if isinstance(event, h11.Data):
                        size += len(event.data)
                        if size > MAX_BODY:
                            raise TooLarge
                        taken.grow_to(size)
                        chunks.append(bytes(event.data))
                    elif isinstance(event, h11.EndOfMessage):
                        return b"".join(chunks)
                    else:  # ConnectionClosed or PAUSED in the middle of a body
                        raise ClientGone
        except TimeoutError:
            raise BodyLate from None
        finally:
            if own:
                taken.release()

    async def read_body_or_refuse(self, declared: int | None, hold: Hold) -> bytes | None:
        """`read_body`, or None once the client got 413 / 503 / 408 (or went away)."""
        try:
            return await self.read_body(declared, hold)
        except TooLarge:
            await self.error(413, "request body too large", close=True)
        except BudgetFull:
            message = "the proxy holds too many request bodies at the moment, retry shortly"
            await self.error(503, message, headers=[("retry-after", "1")], close=True)
        except BodyLate:
            message = f"the request body did not arrive within {hold.budget.timeout:g}s"
            await self.error(408, message, close=True)
        except ClientGone:
            pass
        return None

    async def respond(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: list[tuple[str, str]] | None = None,
        close: bool = False,
    ) -> None:
        """A complete, small response (errors, local endpoints)."""
        all_headers = [("content-type", content_type), ("content-length", str(len(body)))]
        all_headers += headers or []
        if close:
            all_headers.append(("connection", "close"))
        reason = HTTPStatus(status).phrase.encode()
        await self.send(h11.Response(status_code=status, headers=all_headers, reason=reason))
        await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())

    async def malformed(self, exc: h11.RemoteProtocolError) -> None:
        """Answer a request h11 refused (431 for a head over the size limit), if still possible."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):  # h11 lets us answer
            return
        status = exc.error_status_hint
        message = "request head too large" if status == 431 else "malformed request"
        with contextlib.suppress(ConnectionError, OSError, Silent):  # a bomb may not listen
            await self.error(status, message, close=True)

    async def error(
        self,
        status: int,
        message: str,
        headers: list[tuple[str, str]] | None = None,
        close: bool = False,
    ) -> None:
        body = json.dumps({"error": {"type": "proxy_error", "message": message}}).encode()
        await self.respond(status, body, headers=headers, close=close)

    def next_cycle(self) -> bool:
        """Ready for the next request on this connection (False: close it)."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            return True
        return False

    async def close(self) -> None:
        self.waiting.leave(self.writer)
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            await self.writer.wait_closed()


def _head_size(request: h11.Request) -> int:
    """Bytes of a request head as sent (request line, headers, line ends)."""
    line = len(request.method) + len(request.target) + 12  # spaces, HTTP/1.1, CRLF
    return line + sum(len(k) + len(v) + 4 for k, v in request.headers) + 2


def header(request: h11.Request, name: bytes) -> bytes | None:
    """The first value of a request header (h11 lower-cases names)."""
    for key, value in request.headers:
        if key == name:
            return bytes(value)
    return None
