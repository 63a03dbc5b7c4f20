"""The bridge's upstream transport against real local TLS servers: HTTP/2 when the server
picks h2 by ALPN (one multiplexed connection, streamed bodies), HTTP/1.1 otherwise.
Nothing mocked: a sans-IO `h2` server over asyncio on 127.0.0.1, certificates from a
test CA the transport trusts (verification stays on)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from data_plane.http_client import make_client
from data_plane.transport import Timeouts, UpstreamTransport, origin_of
from tests.fixtures.certs import Pki, make_pki

# (server, connection number, stream id, request headers, request body) -> None
Respond = Callable[["H2Server", int, int, dict[bytes, bytes], bytes], Awaitable[None]]


def server_context(pki: Pki, alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.set_alpn_protocols(alpn)
    return ctx


class H2Server:
    """A minimal HTTP/2 server: `respond` runs once per request stream, as a task."""

    def __init__(self, ctx: ssl.SSLContext, respond: Respond) -> None:
        self.ctx = ctx
        self.respond = respond
        self.connections = 0
        self.alpn: list[str | None] = []
        self.streams: list[tuple[int, int, dict[bytes, bytes], bytes]] = []
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._conns: dict[int, tuple[h2.connection.H2Connection, asyncio.StreamWriter]] = {}

    async def send(self, number: int, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        conn, writer = self._conns[number]
        conn.send_headers(stream_id, headers)
        writer.write(conn.data_to_send())
        await writer.drain()

    async def data(self, number: int, stream_id: int, data: bytes, end: bool = False) -> None:
        conn, writer = self._conns[number]
        conn.send_data(stream_id, data, end_stream=end)
        writer.write(conn.data_to_send())
        await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.alpn.append(writer.get_extra_info("ssl_object").selected_alpn_protocol())
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        conn = h2.connection.H2Connection(config=config)
        self._conns[number] = (conn, writer)
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        pending: dict[int, tuple[dict[bytes, bytes], bytearray]] = {}
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        assert event.stream_id is not None and event.headers is not None
                        headers = {bytes(k): bytes(v) for k, v in event.headers}
                        pending[event.stream_id] = (headers, bytearray())
                    elif isinstance(event, h2.events.DataReceived):
                        assert event.stream_id is not None and event.data is not None
                        pending[event.stream_id][1].extend(event.data)
                        conn.acknowledge_received_data(
                            event.flow_controlled_length or 0, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        assert event.stream_id is not None
                        head, body = pending.pop(event.stream_id)
                        self.streams.append((number, event.stream_id, head, bytes(body)))
                        task = asyncio.create_task(
                            self.respond(self, number, event.stream_id, head, bytes(body))
                        )
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> H2Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ctx)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        for task in list(self._tasks):
            task.cancel()
        self.server.close()
        for _, writer in self._conns.values():
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"https://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"


async def echo(
    server: H2Server, number: int, stream: int, head: dict[bytes, bytes], body: bytes
) -> None:
    reply = b'{"path":"%s","got":%d}' % (head[b":path"], len(body))
    await server.send(
        number,
        stream,
        [
            (b":status", b"200"),
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(reply)),
        ],
    )
    await server.data(number, stream, reply, end=True)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
async def transport(pki: Pki) -> AsyncIterator[UpstreamTransport]:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    t = UpstreamTransport(
        ssl_context=ctx, timeouts=Timeouts(connect=5.0, read=5.0, write=5.0, pool=5.0)
    )
    yield t
    await t.aclose()


async def call(t: UpstreamTransport, url: str, body: bytes = b"{}") -> tuple[int, bytes]:
    origin, prefix = origin_of(url)
    status, _headers, chunks, close, *_ = await t.request(
        origin, "POST", prefix + b"/chat/completions", [(b"x-test", b"1")], body
    )
    try:
        return status, b"".join([c async for c in chunks])
    finally:
        await close()


async def test_h2_origin_is_served_over_http2(pki: Pki, transport: UpstreamTransport) -> None:
    """A server that picks h2 by ALPN gets the request on an HTTP/2 stream, and the httpx
    path reports HTTP/2 in the response extensions."""
    async with H2Server(server_context(pki, ["h2", "http/1.1"]), echo) as server:
        status, body = await call(transport, server.url, b'{"x":1}')
        assert status == 200
        assert body == b'{"path":"/v1/chat/completions","got":7}'
        _, stream_id, head, sent = server.streams[-1]
        assert stream_id % 2 == 1 and server.alpn[-1] == "h2"
        assert head[b":method"] == b"POST" and head[b":authority"].startswith(b"127.0.0.1:")
        assert head[b"x-test"] == b"1" and head[b"content-length"] == b"7" and sent == b'{"x":1}'

        async with make_client(trust_env=False, transport=transport) as client:
            response = await client.get(server.url + "/models")
            assert response.status_code == 200
            assert response.extensions["http_version"] == b"HTTP/2"
            assert response.http_version == "HTTP/2"
            assert response.json() == {"path": "/v1/models", "got": 0}


async def test_h2_body_chunks_arrive_as_sent(pki: Pki, transport: UpstreamTransport) -> None:
    """Body chunks of an HTTP/2 response reach the caller before the stream has ended."""
    second = asyncio.Event()

    async def stream(
        server: H2Server, number: int, sid: int, _h: dict[bytes, bytes], _b: bytes
    ) -> None:
        await server.send(
            number, sid, [(b":status", b"200"), (b"content-type", b"text/event-stream")]
        )
        await server.data(number, sid, b"data: 1\n\n")
        await second.wait()
        await server.data(number, sid, b"data: 2\n\n", end=True)

    async with H2Server(server_context(pki, ["h2"]), stream) as server:
        origin, prefix = origin_of(server.url)
        status, headers, chunks, close, *_ = await transport.request(
            origin, "POST", prefix + b"/chat/completions", [], b"{}"
        )
        try:
            assert status == 200 and (b"content-type", b"text/event-stream") in headers
            iterator = chunks.__aiter__()
            first = await asyncio.wait_for(iterator.__anext__(), 5)
            assert first == b"data: 1\n\n"
            second.set()
            assert b"".join([c async for c in iterator]) == b"data: 2\n\n"
        finally:
            await close()


async def test_concurrent_h2_requests_share_one_connection(
    pki: Pki, transport: UpstreamTransport
) -> None:
    """Concurrent requests to an h2 origin are multiplexed as streams of one connection."""
    count = 8
    arrived = 0
    everyone = asyncio.Event()

    async def barrier(
        server: H2Server, number: int, sid: int, head: dict[bytes, bytes], body: bytes
    ) -> None:
        nonlocal arrived
        if head[b":path"].endswith(b"/chat/completions"):
            arrived += 1
            if arrived == count:
                everyone.set()
            await everyone.wait()  # replies only once all are in flight together
        await echo(server, number, sid, head, body)

    async with H2Server(server_context(pki, ["h2", "http/1.1"]), barrier) as server:
        origin, prefix = origin_of(server.url)
        status, _, chunks, close, *_ = await transport.request(
            origin, "GET", prefix + b"/models", [], b""
        )
        assert status == 200 and [c async for c in chunks]
        await close()
        before = server.connections
        results = await asyncio.wait_for(
            asyncio.gather(*(call(transport, server.url) for _ in range(count))), 10
        )
        assert [status for status, _ in results] == [200] * count
        assert server.connections == before
        used = {(number, sid) for number, sid, head, _ in server.streams[-count:]}
        assert len(used) == count and len({number for number, _ in used}) == 1


async def test_http11_only_tls_origin_stays_on_http11(
    pki: Pki, transport: UpstreamTransport
) -> None:
    """A TLS server that offers only http/1.1 is served over HTTP/1.1 keep-alive."""
    seen: list[str | None] = []
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("ssl_object").selected_alpn_protocol())
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                heads.append(head)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(
        serve, "127.0.0.1", 0, ssl=server_context(pki, ["http/1.1"])
    )
    try:
        url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        assert await call(transport, url) == (200, b"{}")
        assert await call(transport, url) == (200, b"{}")
        assert seen == ["http/1.1"] and heads[0].startswith(b"POST /v1/chat/completions HTTP/1.1")
        async with make_client(trust_env=False, transport=transport) as client:
            response = await client.get(url + "/models")
            assert response.http_version == "HTTP/1.1" and response.content == b"{}"
        assert len(seen) == 1
    finally:
        server.close()
