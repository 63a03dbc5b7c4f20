"""Abusive clients for the DoS tests, run as a separate process (its own fd limit):

    python -m tests.resilience.dos_clients MODE HOST PORT COUNT SECONDS

MODE is `idle` (connect, send nothing), `slowloris` (send a request line, then one header
byte per second) or `bomb` (a request head of 128 MiB, sent as fast as the peer takes it).
Every connection is held until the peer closes it or SECONDS have passed. Prints one
JSON line: how many connections ended each way (`closed`, `answered` with the status
line, `held` to the end, `connect_failed`), the peak held at once, the bytes sent.
"""

from __future__ import annotations

import asyncio
import collections
import json
import resource
import sys

BOMB = 128 * 1024 * 1024
PIECE = b"a" * (1024 * 1024)


class Attack:
    def __init__(self, host: str, port: int, mode: str, until: float) -> None:
        self.host, self.port, self.mode, self.until = host, port, mode, until
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.open = 0
        self.peak = 0
        self.sent = 0

    async def one(self, connecting: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        async with connecting:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), 30
                )
            except (OSError, TimeoutError):
                self.outcomes["connect_failed"] += 1
                return
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            self.outcomes[await self._abuse(reader, writer, loop)] += 1
        except (ConnectionError, OSError):
            self.outcomes["closed"] += 1
        finally:
            self.open -= 1
            writer.transport.abort()

    async def _abuse(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        loop: asyncio.AbstractEventLoop,
    ) -> str:
        if self.mode == "bomb":
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-bomb: ")
            for _ in range(BOMB // len(PIECE)):
                writer.write(PIECE)
                await writer.drain()  # raises once the peer has closed
                self.sent += len(PIECE)
        elif self.mode == "slowloris":
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        while (left := self.until - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(reader.read(4096), min(left, 1.0))
            except TimeoutError:
                if self.mode == "slowloris":
                    writer.write(b"x")  # one more byte of a header that never ends
                    self.sent += 1
                continue
            return f"answered {data.split(b' ', 2)[1].decode()}" if data else "closed"
        return "held"


async def main(mode: str, host: str, port: int, count: int, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    attack = Attack(host, port, mode, loop.time() + seconds)
    connecting = asyncio.Semaphore(256)
    await asyncio.gather(*(attack.one(connecting) for _ in range(count)))
    print(json.dumps({"outcomes": attack.outcomes, "peak": attack.peak, "sent": attack.sent}))


if __name__ == "__main__":
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    mode, host, port, count, seconds = sys.argv[1:6]
    asyncio.run(main(mode, host, int(port), int(count), float(seconds)))
