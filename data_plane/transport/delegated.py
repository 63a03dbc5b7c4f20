"""Handing one request to one of httpx's own transports, answered as a `Reply`.

Used where httpx's pools are the right tool: origins that chose HTTP/2 (see http2.py)
and origins behind an environment proxy (see proxy.py).
"""

from __future__ import annotations

from typing import NamedTuple, cast

import httpx

from data_plane.transport.models import Headers, Origin, Reply, Timeouts, needs_length


class Delegated(NamedTuple):
    """A request the pool hands on: `headers` already hold Host."""

    origin: Origin
    method: str
    target: bytes
    headers: Headers
    body: bytes
    timeouts: Timeouts


async def via_httpx(transport: httpx.AsyncBaseTransport, delegated: Delegated) -> Reply:
    """Send the request through `transport`."""
    (scheme, host, port), method, target, headers, body, timeouts = delegated
    url = httpx.URL(scheme=scheme.decode(), host=host, port=port, raw_path=target)
    request = httpx.Request(method, url, headers=headers)
    if needs_length(method, body):
        request.headers["content-length"] = str(len(body))
    request.stream = httpx.ByteStream(body)
    request.extensions["timeout"] = timeouts._asdict()
    response = await transport.handle_async_request(request)
    stream = cast(httpx.AsyncByteStream, response.stream)
    version = response.extensions.get("http_version", b"HTTP/1.1")
    return Reply(
        response.status_code, response.headers.raw, aiter(stream), response.aclose, version
    )
