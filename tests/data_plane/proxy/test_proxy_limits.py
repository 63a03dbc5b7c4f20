"""The proxy's own limits against clients that hold sockets without doing anything.

In process, over real sockets: an oversized request head gets 431, a head trickled in
too slowly and a silent connection are dropped, a tunnel nothing went through is
closed, the connection cap evicts the longest-waiting connection (or answers 503 when
every connection is busy), and dumps keep only the first MAX_DUMP_BODY bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import pytest
from dp_fakes import (
    MEMBER_TOKEN,
    ConfigServer,
    StartBridge,
    dumped_body,
    first_dumped_response,
    snapshot,
)
from proxy_fakes import Echo, StartProxy, StartStack, providers, raw_connect, trust

from data_plane.proxy.server import Proxy
from tests.fixtures.upstream import FakeUpstream
from tests.fixtures.waits import eventually
from tests.test_file_modes import mode


async def dial(proxy: Proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(proxy.host, proxy.port)


async def closed_by_proxy(reader: asyncio.StreamReader, within: float = 5.0) -> bytes:
    """Everything the proxy sent until it closed the connection (fails if it does not)."""
    return await asyncio.wait_for(reader.read(), within)


def sample(proxy: Proxy, name: str, **labels: str) -> float:
    value = proxy.metrics.registry.get_sample_value("aibridgeproxyd_" + name, labels or None)
    return value or 0.0


async def test_oversized_request_head_gets_431(start_bare_proxy: StartProxy) -> None:
    """A request head over AIBRIDGE_PROXY_MAX_HEADER_BYTES is answered 431 and the connection closed."""
    proxy = await start_bare_proxy(AIBRIDGE_PROXY_MAX_HEADER_BYTES="4096")
    reader, writer = await dial(proxy)
    writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 8192 + b"\r\n\r\n")
    answer = await closed_by_proxy(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert b"request head too large" in answer


async def test_oversized_head_inside_intercepted_tls_gets_431(
    upstream: FakeUpstream, start_stack: StartStack
) -> None:
    """Inside a MITM'd TLS connection an oversized request head is answered 431 too."""
    proxy = await start_stack(AIBRIDGE_PROXY_MAX_HEADER_BYTES="4096")
    status, _, reader, writer = await raw_connect(
        proxy, f"localhost:{upstream.port}", f"u:{MEMBER_TOKEN}"
    )
    assert status == 200
    await writer.start_tls(trust(proxy), server_hostname="localhost")
    writer.write(b"GET /v1/models HTTP/1.1\r\nhost: localhost\r\nx-big: " + b"a" * 8192)
    answer = await closed_by_proxy(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert upstream.seen == []


async def test_request_head_trickled_too_slowly_is_dropped(start_bare_proxy: StartProxy) -> None:
    """A client sending its head byte by byte (slowloris) is dropped at the header deadline."""
    proxy = await start_bare_proxy(AIBRIDGE_PROXY_HEADER_TIMEOUT="300ms")
    reader, writer = await dial(proxy)

    async def trickle() -> None:
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        with contextlib.suppress(ConnectionError):
            while True:  # one header byte at a time, well within the idle timeout each
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.05)  # pace: a trickle, each byte within the timeout

    sender = asyncio.create_task(trickle())
    try:
        assert await closed_by_proxy(reader) == b""
    finally:
        sender.cancel()
        writer.close()
    assert sample(proxy, "connections_closed_total", reason="silent") == 1


async def test_silent_connections_are_dropped_before_and_between_requests(
    start_bare_proxy: StartProxy,
) -> None:
    """A connection that sends nothing, or nothing after a request, is closed after the idle timeout."""
    proxy = await start_bare_proxy(AIBRIDGE_PROXY_IDLE_TIMEOUT="300ms")
    fresh_reader, fresh = await dial(proxy)
    used_reader, used = await dial(proxy)
    used.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    assert await closed_by_proxy(fresh_reader) == b""
    answer = await closed_by_proxy(used_reader)
    fresh.close()
    used.close()
    assert answer.startswith(b"HTTP/1.1 200 ")


async def test_tunnel_nothing_went_through_is_closed(
    echo: Echo, start_tunnel_proxy: StartProxy
) -> None:
    """A CONNECT tunnel that carries no byte within the idle timeout is closed; one in use is not."""
    proxy = await start_tunnel_proxy(AIBRIDGE_PROXY_IDLE_TIMEOUT="300ms")
    target, auth = f"127.0.0.1:{echo.port}", f"u:{MEMBER_TOKEN}"
    status, _, idle_reader, idle = await raw_connect(proxy, target, auth)
    assert status == 200
    status, _, used_reader, used = await raw_connect(proxy, target, auth)
    used.write(b"ping")
    assert await used_reader.readexactly(4) == b"ping"
    assert await closed_by_proxy(idle_reader) == b""
    used.write(b"pong")  # past the idle timeout: a tunnel that moved bytes stays open
    assert await used_reader.readexactly(4) == b"pong"
    idle.close()
    used.close()


async def test_connection_cap_evicts_the_longest_waiting_connection(
    start_bare_proxy: StartProxy,
) -> None:
    """At the cap a new client is served and the connection waiting longest for a request is closed."""
    proxy = await start_bare_proxy(AIBRIDGE_PROXY_MAX_CONNECTIONS="3")
    idle = [await dial(proxy) for _ in range(3)]
    await eventually(lambda: sample(proxy, "client_connections") == 3)
    async with httpx.AsyncClient(base_url=f"http://{proxy.listen}", timeout=5) as http:
        assert (await http.get("/healthz")).status_code == 200
    assert await closed_by_proxy(idle[0][0]) == b""
    assert sample(proxy, "connections_closed_total", reason="evicted") == 1
    for reader, writer in idle[1:]:  # the others still get answers
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200 ")
    for _, writer in idle:
        writer.close()


async def test_connection_cap_with_every_connection_busy_answers_503(
    echo: Echo, start_tunnel_proxy: StartProxy
) -> None:
    """When every held connection is busy (tunnels), a new connection gets a quick 503 and is closed."""
    proxy = await start_tunnel_proxy(AIBRIDGE_PROXY_MAX_CONNECTIONS="2")
    tunnels = [
        await raw_connect(proxy, f"127.0.0.1:{echo.port}", f"u:{MEMBER_TOKEN}") for _ in "ab"
    ]
    assert [status for status, *_ in tunnels] == [200, 200]
    reader, writer = await dial(proxy)
    answer = await closed_by_proxy(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 503 "), answer[:80]
    assert b"connection limit" in answer
    for _, _, tunnel_reader, tunnel in tunnels:  # the busy ones are untouched
        tunnel.write(b"ping")
        assert await tunnel_reader.readexactly(4) == b"ping"
        tunnel.close()


@pytest.mark.usefixtures("oversized_reply")
async def test_proxy_dump_keeps_only_the_dump_cap(
    config_service: ConfigServer,
    upstream: FakeUpstream,
    start_bridge: StartBridge,
    start_proxy: StartProxy,
    tmp_path: Path,
) -> None:
    """A provider response larger than the dump cap reaches the client whole; the proxy's dump keeps the cap (0600)."""
    await config_service.service.publish(snapshot("1", providers(upstream)))
    bridge = await start_bridge(wait_version="1")
    dumps = tmp_path / "dumps"
    proxy = await start_proxy(
        wait_version="1", AIBRIDGE_PROXY_BRIDGE_URL=bridge.url, AIBRIDGE_DUMP_DIR=str(dumps)
    )
    async with httpx.AsyncClient(proxy=f"http://u:{MEMBER_TOKEN}@{proxy.listen}") as http:
        reply = await http.post(
            f"http://localhost:{upstream.port}/v1/chat/completions",
            json={"model": "m", "messages": []},
        )
    assert len(reply.content) == 30_000
    dumped = await first_dumped_response(dumps, within=5)
    assert dumped_body(dumped) == b"y" * 5000 + b"\n[... 25000 more bytes not dumped]\n"
    assert mode(dumped) == 0o600
