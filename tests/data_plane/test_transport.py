"""The bridge's upstream transport against scripted raw HTTP servers: keep-alive reuse,
framing (length, chunked, until close, HEAD, 1xx), failures as httpx exceptions, and the
httpx client path, proxies from the environment. Nothing mocked: real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from data_plane.bridge.server import make_http_client, make_upstream
from data_plane.transport import Timeouts, UpstreamTransport, origin_of
from data_plane.transport.proxy import EnvProxies

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[bool]]


class Scripted:
    """A raw HTTP/1.1 server: `handler(reader, writer, head)` per request; False closes."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                if not await self.handler(reader, writer, head + body):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"


def reply(raw: bytes, keep: bool = True) -> Handler:
    async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _req: bytes) -> bool:
        w.write(raw)
        await w.drain()
        return keep

    return handler


OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


@pytest.fixture
async def transport() -> AsyncIterator[UpstreamTransport]:
    t = UpstreamTransport(timeouts=Timeouts(connect=2.0, read=0.5, write=2.0, pool=2.0))
    yield t
    await t.aclose()


async def call(
    t: UpstreamTransport, url: str, method: str = "POST", body: bytes = b"{}", target: bytes = b""
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    origin, prefix = origin_of(url)
    status, headers, chunks, close, *_ = await t.request(
        origin, method, target or prefix + b"/chat/completions", [(b"x-test", b"1")], body
    )
    try:
        data = b"".join([c async for c in chunks])
    finally:
        await close()
    return status, headers, data


async def test_keep_alive_reuses_one_connection(transport: UpstreamTransport) -> None:
    async with Scripted(reply(OK)) as server:
        for _ in range(3):
            assert (await call(transport, server.url))[::2] == (200, b"{}")
        assert server.connections == 1
        head = server.heads[0]
        assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:")
        assert b"x-test: 1\r\ncontent-length: 2\r\n\r\n" in head


async def test_idle_connection_closed_by_server_is_not_reused(
    transport: UpstreamTransport,
) -> None:
    async with Scripted(reply(OK, keep=False)) as server:
        await call(transport, server.url)
        # A window, not a state: nothing public says when the client's loop has read the
        # server's close (the pool learns it in connection_lost); counting the server's
        # closes and waiting for that was tried and is not enough.
        await asyncio.sleep(0.05)
        assert (await call(transport, server.url))[0] == 200
        assert server.connections == 2


async def test_chunked_body_relayed_as_it_arrives(transport: UpstreamTransport) -> None:
    gate = asyncio.Event()

    async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _req: bytes) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\ndata:\r\n")
        await w.drain()
        await gate.wait()
        w.write(b"3\r\n 1\n\r\n0\r\n\r\n")
        return True

    async with Scripted(handler) as server:
        origin, prefix = origin_of(server.url)
        status, _, chunks, close, *_ = await transport.request(origin, "POST", prefix, [], b"{}")
        assert status == 200
        assert await anext(chunks) == b"data:"  # before the rest was even written
        gate.set()
        assert [c async for c in chunks] == [b" 1\n"]
        await close()
        assert (await call(transport, server.url))[0] == 200  # the connection was kept
        assert server.connections == 1


async def test_body_until_close_and_head_and_informational(
    transport: UpstreamTransport,
) -> None:
    async with Scripted(reply(b"HTTP/1.1 200 OK\r\n\r\nuntil close", keep=False)) as server:
        assert (await call(transport, server.url))[2] == b"until close"
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"
    async with Scripted(reply(head)) as server:
        assert (await call(transport, server.url, method="HEAD", body=b""))[::2] == (200, b"")
        assert b"content-length" not in server.heads[0]
    cont = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
    async with Scripted(reply(cont)) as server:
        assert (await call(transport, server.url))[::2] == (200, b"{}")


async def test_failures_are_httpx_errors(transport: UpstreamTransport) -> None:
    async with Scripted(reply(OK)) as server:
        url = server.url
    with pytest.raises(httpx.ConnectError):
        await call(transport, url)  # nobody listens any more

    async def silent(_r: asyncio.StreamReader, _w: asyncio.StreamWriter, _req: bytes) -> bool:
        await asyncio.sleep(5)  # a window: silent for longer than the read timeout
        return False

    async with Scripted(silent) as server:
        with pytest.raises(httpx.ReadTimeout):
            await call(transport, server.url)
    cut = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"
    async with Scripted(reply(cut, keep=False)) as server:
        with pytest.raises(httpx.RemoteProtocolError):
            await call(transport, server.url)
    async with Scripted(reply(b"", keep=False)) as server:
        with pytest.raises(httpx.RemoteProtocolError):
            await call(transport, server.url)
    async with Scripted(reply(b"NOT HTTP AT ALL\r\n\r\n")) as server:
        with pytest.raises(httpx.RemoteProtocolError):
            await call(transport, server.url)


async def test_abandoned_response_closes_its_connection(transport: UpstreamTransport) -> None:
    async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _req: bytes) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n")
        await w.drain()
        return True

    async with Scripted(handler) as server:
        origin, prefix = origin_of(server.url)
        _, _, chunks, close, *_ = await transport.request(origin, "POST", prefix, [], b"{}")
        assert await anext(chunks) == b"a"
        await close()  # mid-body: the connection cannot be reused
        async with Scripted(reply(OK)) as other:
            assert (await call(transport, other.url))[0] == 200


async def test_request_past_the_connection_cap_waits_for_a_slot_within_the_pool_timeout() -> None:
    """With every connection busy a request waits for one to be given back, and fails with
    PoolTimeout when none is given back within the pool timeout."""
    t = UpstreamTransport(
        max_connections=1, timeouts=Timeouts(connect=2.0, read=2.0, write=2.0, pool=0.2)
    )
    try:
        async with Scripted(reply(OK)) as server:
            origin, prefix = origin_of(server.url)
            _, _, chunks, close, *_ = await t.request(origin, "POST", prefix, [], b"{}")
            with pytest.raises(httpx.PoolTimeout):
                await call(t, server.url)
            waiting = asyncio.ensure_future(call(t, server.url))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            assert b"".join([c async for c in chunks]) == b"{}"
            await close()  # the slot is given back: the waiting request takes it
            assert (await waiting)[::2] == (200, b"{}")
            assert (await call(t, server.url))[::2] == (200, b"{}")  # a free slot at once
    finally:
        await t.aclose()


async def test_through_the_httpx_client() -> None:
    client = make_http_client(make_upstream())
    try:
        async with Scripted(reply(OK)) as server:
            response = await client.post(server.url + "/x?a=1&b=%20", content=b"{}")
            assert (response.status_code, response.content) == (200, b"{}")
            response = await client.get(server.url + "/y")
            assert response.status_code == 200
            assert server.connections == 1
            first, second = server.heads
            assert first.startswith(b"POST /v1/x?a=1&b=%20 HTTP/1.1\r\n")
            assert second.startswith(b"GET /v1/y HTTP/1.1\r\n")
            assert b"user-agent" not in first.lower()
    finally:
        await client.aclose()


async def test_no_cookies_kept_between_callers() -> None:
    client = make_http_client(make_upstream())
    set_cookie = b"HTTP/1.1 200 OK\r\nset-cookie: session=alice\r\ncontent-length: 0\r\n\r\n"
    try:
        async with Scripted(reply(set_cookie)) as server:
            await client.get(server.url + "/a")
            await client.get(server.url + "/b")
            assert b"cookie" not in server.heads[1].lower()
    finally:
        await client.aclose()


def _proxy_env(monkeypatch: pytest.MonkeyPatch, proxy: str, no_proxy: str) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("NO_PROXY", no_proxy)


async def test_environment_proxy_carries_requests_not_exempted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With HTTP_PROXY set, the bridge's transport sends a request (its own path and the httpx
    client's) to the proxy in absolute form, and an origin NO_PROXY names goes direct."""
    async with Scripted(reply(OK)) as proxy, Scripted(reply(OK)) as direct:
        direct_origin, prefix = origin_of(direct.url)
        _proxy_env(monkeypatch, proxy.url.removesuffix("/v1"), f"127.0.0.1:{direct_origin[2]}")
        upstream = make_upstream()
        client = make_http_client(upstream)
        try:
            assert (await call(upstream, "http://upstream.test:81/v1"))[::2] == (200, b"{}")
            assert (await client.get("http://upstream.test:81/v1/models")).status_code == 200
            assert (await call(upstream, direct.url))[::2] == (200, b"{}")
        finally:
            await client.aclose()
        first, second = proxy.heads
        assert first.startswith(b"POST http://upstream.test:81/v1/chat/completions HTTP/1.1")
        assert b"\r\nhost: upstream.test:81\r\n" in first.lower()
        assert second.startswith(b"GET http://upstream.test:81/v1/models HTTP/1.1")
        assert direct.heads[0].startswith(b"POST " + prefix + b"/chat/completions HTTP/1.1")


@pytest.mark.parametrize(
    ("url", "proxied"),
    [
        ("http://example.com/", False),  # "example.com": the name and its subdomains
        ("http://api.example.com/", False),
        ("http://badexample.com/", True),
        ("http://sub.test/", True),  # ".sub.test": subdomains only
        ("http://a.sub.test/", False),
        ("http://10.1.2.3/", False),  # a CIDR range
        ("http://[::1]:8080/", False),  # an IPv6 address
        ("http://11.0.0.1/", True),
        ("http://only.test:8080/", False),  # "only.test:8080": that port only
        ("http://only.test:8081/", True),
    ],
)
def test_no_proxy_rules(monkeypatch: pytest.MonkeyPatch, url: str, proxied: bool) -> None:
    """NO_PROXY entries exempt what curl and httpx exempt: a name with its subdomains, a
    leading dot for subdomains only, addresses and CIDR ranges, host:port."""
    _proxy_env(
        monkeypatch,
        "http://proxy.test:3128",
        "example.com, .sub.test,10.0.0.0/8,::1,only.test:8080",
    )
    proxies = EnvProxies(httpx.Limits(), trust_env=True)
    assert (proxies.transport_for(origin_of(url)[0]) is not None) is proxied


def test_malformed_proxy_url_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy URL httpx cannot use stops the bridge's transport from being made (at start),
    rather than failing the first request sent through it."""
    _proxy_env(monkeypatch, "ftp://proxy.test:21", "")
    with pytest.raises(ValueError, match="proxy"):
        make_upstream()


async def test_relay_hands_each_read_to_the_sink_as_one_piece_and_reuses_the_connection(
    transport: UpstreamTransport,
) -> None:
    """Through `relay`, the chunks of one upstream write reach the sink as one piece, later
    writes as later pieces, and the connection serves the next request."""
    script = asyncio.Queue[bytes]()
    answered = 0

    async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _req: bytes) -> bool:
        nonlocal answered
        answered += 1
        if answered > 1:
            w.write(OK)
            return True
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while part := await script.get():
            w.write(part)
            await w.drain()
        w.write(b"0\r\n\r\n")
        return True

    async with Scripted(handler) as server:
        origin, prefix = origin_of(server.url)
        reply_ = await transport.request(origin, "POST", prefix, [], b"{}")
        assert reply_.relay is not None
        pieces: list[bytes] = []

        def sink(piece: bytes) -> None:
            pieces.append(piece)
            if len(pieces) == 1:
                script.put_nowait(b"1\r\nd\r\n")
                script.put_nowait(b"")

        script.put_nowait(b"1\r\na\r\n1\r\nb\r\n1\r\nc\r\n")
        try:
            await reply_.relay(sink)
        finally:
            await reply_.close()
        assert pieces == [b"abc", b"d"]
        assert (await call(transport, server.url))[::2] == (200, b"{}")
        assert server.connections == 1


async def test_relay_times_out_on_a_stream_gone_silent(transport: UpstreamTransport) -> None:
    """A stream that stops sending for longer than the read timeout fails the relay with a
    ReadTimeout, after the pieces that came."""

    async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _req: bytes) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n")
        await w.drain()
        await asyncio.sleep(5)
        return False

    async with Scripted(handler) as server:
        origin, prefix = origin_of(server.url)
        reply_ = await transport.request(origin, "POST", prefix, [], b"{}")
        assert reply_.relay is not None
        pieces: list[bytes] = []
        try:
            with pytest.raises(httpx.ReadTimeout):
                await reply_.relay(lambda piece: pieces.append(piece))
        finally:
            await reply_.close()
        assert pieces == [b"a"]
