"""The proxy's shared upstream clients never carry one user's cookies to another."""

from __future__ import annotations

import asyncio

import httpx

from data_plane.http_client import make_client
from data_plane.proxy.context import make_proxy_transport


async def test_shared_client_keeps_no_cookie_between_callers() -> None:
    """A Set-Cookie answered to one caller is not sent on the next caller's request."""
    seen: list[str | None] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        return httpx.Response(200, headers={"set-cookie": "session=alice-secret; Path=/"})

    client = make_client(trust_env=False, transport=httpx.MockTransport(handle))
    try:
        await client.get("http://upstream.test/login")
        await client.get("http://upstream.test/other-user")
    finally:
        await client.aclose()
    assert seen == [None, None]


async def test_proxy_transport_sends_no_cookie_it_was_given() -> None:
    """The proxy's own transport (to the bridge and to origins) never replays a Set-Cookie."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                seen.append(head)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nset-cookie: session=alice-secret; Path=/\r\n"
                    b"content-length: 2\r\n\r\nok"
                )
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass  # the transport closed its keep-alive connection
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = make_proxy_transport()
    try:
        for path in (b"/login", b"/other-user"):
            reply = await transport.request((b"http", "127.0.0.1", port), "GET", path, [], b"")
            assert b"".join([chunk async for chunk in reply.chunks]) == b"ok"
            await reply.close()
    finally:
        await transport.aclose()
        server.close()
        await server.wait_closed()
    assert len(seen) == 2
    assert not any(b"cookie:" in head.lower().replace(b"set-cookie:", b"") for head in seen)
