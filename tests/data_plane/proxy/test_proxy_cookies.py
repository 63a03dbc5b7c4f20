"""The proxy's shared upstream client never carries one user's cookies to another."""

from __future__ import annotations

import httpx

from data_plane.http_client import make_client
from data_plane.proxy.context import make_proxy_client


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


async def test_proxy_client_stores_no_cookie() -> None:
    """The proxy's own client drops every Set-Cookie it is shown."""
    client = make_proxy_client()
    try:
        request = httpx.Request("GET", "https://api.provider.test/v1/models")
        response = httpx.Response(200, headers={"set-cookie": "session=bob"}, request=request)
        client.cookies.extract_cookies(response)
        assert len(client.cookies) == 0
    finally:
        await client.aclose()
