"""The pool sizes both daemons use, and the httpx client for what needs httpx.

Pools: 2000 connections, 500 kept alive for 60 s (the bridge's upstream transport and
the proxy's transports to the bridge and to origins, all `UpstreamTransport`s of
data_plane/transport/). `make_client` is the httpx client on such a transport for code
that speaks httpx (the bridge's Bedrock client): the same timeouts, no redirects
followed, and exactly the headers the caller gives (httpx's default User-Agent, Accept
and Accept-Encoding are dropped). Its parameters:

- `trust_env`: whether HTTP(S)_PROXY / NO_PROXY apply (the bridge honours them; the
  transport applies them itself, see data_plane/transport/proxy.py).
- `transport`: the `UpstreamTransport`, or httpx's own pool when None.
- `read_timeout`: 600 s by default.

It stores no cookies: the client is shared by every caller, so a jar would replay one
user's `Set-Cookie` on another user's requests to the same origin.
"""

from __future__ import annotations

import http.cookiejar

import httpx

MAX_CONNECTIONS = 2000
MAX_KEEPALIVE = 500
KEEPALIVE_EXPIRY = 60.0


def make_client(
    *,
    trust_env: bool,
    read_timeout: float = 600.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """A pooled client that sends exactly the headers it is given."""
    limits = httpx.Limits(
        max_connections=MAX_CONNECTIONS,
        max_keepalive_connections=MAX_KEEPALIVE,
        keepalive_expiry=KEEPALIVE_EXPIRY,
    )
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(connect=10.0, read=read_timeout, write=60.0, pool=30.0),
        limits=limits,
        transport=transport,
        follow_redirects=False,
        trust_env=trust_env,
    )
    client.cookies.jar.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    for name in ("user-agent", "accept", "accept-encoding"):
        del client.headers[name]
    return client
