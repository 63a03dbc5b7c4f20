"""Byte-for-byte tunnels between a client and a destination (non-provider CONNECTs)."""

from __future__ import annotations

import asyncio
import contextlib

CHUNK = 65536


async def _copy(
    src: asyncio.StreamReader, dst: asyncio.StreamWriter, flowing: asyncio.Event
) -> int:
    """Copy until EOF, then half-close dst so the far side sees the end too."""
    total = 0
    while data := await src.read(CHUNK):
        flowing.set()
        dst.write(data)
        await dst.drain()  # backpressure: never buffer more than the slow side accepts
        total += len(data)
    if dst.can_write_eof():
        with contextlib.suppress(OSError):
            dst.write_eof()
    return total


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError, TimeoutError):
        await writer.wait_closed()


async def pipe(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    first: bytes = b"",
    *,
    idle: float,
) -> tuple[int, int]:
    """Relay both ways until both ends are done; (bytes up, bytes down).

    An error in either direction closes both ends (a half-dead tunnel would otherwise
    hang on the other direction forever); a clean EOF only half-closes, as TCP does.
    A tunnel through which no byte went either way within `idle` seconds is closed.
    """
    (c_reader, c_writer), (u_reader, u_writer) = client, upstream
    tasks: list[asyncio.Task[int]] = []
    flowing = asyncio.Event()
    try:
        if first:  # bytes the client pipelined after its CONNECT request
            flowing.set()
            u_writer.write(first)
            await u_writer.drain()
        tasks = [
            asyncio.create_task(_copy(c_reader, u_writer, flowing)),
            asyncio.create_task(_copy(u_reader, c_writer, flowing)),
        ]
        started = asyncio.create_task(flowing.wait())
        await asyncio.wait([started, *tasks], timeout=idle, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if not flowing.is_set() and not any(t.done() for t in tasks):
            return 0, 0  # nothing ever went through: the finally below closes both ends
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        if pending and not any(t.exception() for t in done):
            await asyncio.wait(pending)  # one side finished cleanly: let the other drain
    except OSError:
        pass
    finally:
        for task in tasks:
            task.cancel()
        # Collect every outcome (no "exception never retrieved" for the losing side).
        await asyncio.gather(*tasks, return_exceptions=True)
        await _close(u_writer)
        await _close(c_writer)

    def moved(task: asyncio.Task[int]) -> int:
        return task.result() if not task.cancelled() and task.exception() is None else 0

    if not tasks:
        return 0, 0
    return moved(tasks[0]) + len(first), moved(tasks[1])
