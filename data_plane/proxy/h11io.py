"""HTTP/1.1 over an asyncio stream pair with h11: events in, events out.

h11 does the parsing (and keep-alive, chunked encoding, CONNECT's protocol switch); this
module only moves bytes between it and the streams. Used on the proxy's plain side and
inside every MITM'd TLS connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from http import HTTPStatus

import h11

READ_SIZE = 65536
MAX_BODY = 32 * 1024 * 1024  # the bridge's own limit; refuse early, without buffering more


class TooLarge(Exception):
    pass


class ClientGone(Exception):
    """The client closed the connection (or broke HTTP) before the request was complete."""


class H11Stream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.SERVER)

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            try:
                data = await self.reader.read(READ_SIZE)
            except (ConnectionError, OSError):
                data = b""
            self.conn.receive_data(data)  # b"": end of stream, h11 turns it into an event

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def read_body(self, declared: int | None = None) -> bytes:
        """The whole request body (up to MAX_BODY), after the Request event."""
        if declared is not None and declared > MAX_BODY:
            raise TooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    raise TooLarge
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:  # ConnectionClosed or PAUSED in the middle of a body
                raise ClientGone

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
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            await self.writer.wait_closed()


def header(request: h11.Request, name: bytes) -> bytes | None:
    """The first value of a request header (h11 lower-cases names)."""
    for key, value in request.headers:
        if key == name:
            return bytes(value)
    return None
