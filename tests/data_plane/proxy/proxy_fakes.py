"""Helpers for the proxy tests: an echo server to tunnel to, a hand-written CONNECT, an SSL
context trusting the proxy's CA, and the providers of a bridge-and-proxy stack."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Awaitable, Callable

from dp_fakes import KEY_A, anthropic_provider, provider

from aibridge.config.v1 import provider_pb2 as pb
from data_plane.proxy.server import Proxy
from tests.fixtures.upstream import FakeUpstream
from tests.fixtures.waits import eventually

StartProxy = Callable[..., Awaitable[Proxy]]


StartStack = Callable[..., Awaitable[Proxy]]


async def wait_for_proxy_version(proxy: Proxy, version: str, within: float = 5.0) -> None:
    await eventually(
        lambda: proxy.shared is not None and proxy.shared.table.version == version, within
    )


def providers(upstream: FakeUpstream) -> list[pb.Provider]:
    """Two hostnames for one upstream: the proxy maps localhost to OpenAI, 127.0.0.1 to
    Anthropic."""
    openai = provider(
        "openai", pb.PROVIDER_TYPE_OPENAI, f"http://localhost:{upstream.port}/v1/", [KEY_A]
    )
    return [openai, anthropic_provider(upstream)]  # http://127.0.0.1:<port>/


def trust(proxy: Proxy) -> ssl.SSLContext:
    """A client context that trusts (only) the proxy's CA."""
    assert proxy.shared is not None
    return ssl.create_default_context(cadata=proxy.shared.ca_pem.decode())


class Echo:
    """A TCP echo server on 127.0.0.1 (the tunnel's far end)."""

    def __init__(self) -> None:
        self.port = 0
        self.server: asyncio.Server | None = None
        self.peers: list[str] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peers.append(writer.get_extra_info("peername")[0])
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def start(self, host: str = "127.0.0.1") -> None:
        self.server = await asyncio.start_server(self._handle, host, 0)
        self.port = self.server.sockets[0].getsockname()[1]


async def raw_connect(
    proxy: Proxy, target: str, auth: str | None = None
) -> tuple[int, bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a CONNECT by hand: (status, response head, reader, writer)."""
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if auth is not None:
        lines.append("Proxy-Authorization: Basic " + base64.b64encode(auth.encode()).decode())
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        head += await reader.readexactly(length)
    return status, head, reader, writer
