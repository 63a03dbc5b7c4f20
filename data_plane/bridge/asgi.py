"""The few ASGI types and helpers the bridge needs (a raw ASGI app: no framework)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Protocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# A request's scope carries, from the bridge's HTTP protocol, a `ConnectionLost` under
# `scope["extensions"][LOST]`.
LOST = "aibridge.connection_lost"


# ... and, once the whole request body is in the server's buffer (so `receive()` returns
# without waiting), True under `scope["extensions"][BODY_IN]`.
BODY_IN = "aibridge.body_in"


# And, once the response's cycle exists, a `DirectBody` under `scope["extensions"][BODY]`.
BODY = "aibridge.direct_body"


class DirectBody(Protocol):
    """A started response's body written straight to the client's connection, bypassing
    the server's per-message ASGI `send` (the relay of a stream writes once per upstream
    read). The response's start and its end still go through `send`."""

    def usable(self) -> bool:
        """Whether the response is started, not complete, and framed by the server as
        chunks (so that `write` may frame each piece as one)."""
        ...

    def write(self, body: bytes) -> Awaitable[None] | None:
        """Write `body` (not empty) as one piece of the response; the wait for the client
        to drain its buffer when that is over its high-water mark (await it before
        producing more), else None. Nothing is written once the client is gone."""
        ...


class ConnectionLost:
    """The app's callback, run by the server if the client's connection closes before the
    response is complete: disconnects are seen without a task per request waiting in
    `receive()`."""

    __slots__ = ("callback", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.callback: Callable[[], None] | None = None
        # The connection's loop: `asyncio.current_task(loop)` without looking the running
        # loop up (on Python 3.11 that is a getpid() system call per request).
        self.loop = loop


async def respond(
    send: Send,
    status: int,
    body: bytes,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
    content_type: bytes = b"application/json",
) -> None:
    """A complete response in one go."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *extra_headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
