"""The ASGI lifespan protocol, answered the same way by every app of ours."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any


async def lifespan(
    receive: Callable[[], Awaitable[Mapping[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Acknowledge startup at once; at shutdown run `on_shutdown`, acknowledge, return."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if on_shutdown is not None:
                await on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
