"""HTTP/2 fallback: origins whose server picked h2 by ALPN.

The first time a TLS server picks h2 the origin is remembered, and from then on it is
served through one shared `httpx.AsyncHTTPTransport(http2=True)` (h2 does the framing):
HTTP/2 multiplexes every request to an origin over one connection, so httpcore's pool
stays a connection or two deep and its scans cost nothing. Cleartext http never tries
h2c.
"""

from __future__ import annotations

from collections.abc import Callable
from ssl import SSLContext

import httpx

from data_plane.transport.delegated import Delegated, via_httpx
from data_plane.transport.models import Origin, Reply

# Connection-specific headers HTTP/2 forbids (RFC 9113 8.2.2); httpcore turns Host into
# :authority. TE is allowed only as "trailers".
_NOT_H2 = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)


def _allowed(name: bytes, value: bytes) -> bool:
    lowered = name.lower()
    return lowered not in _NOT_H2 and (lowered != b"te" or value.lower() == b"trailers")


class HTTP2Fallback:
    """The origins that chose h2, and the one httpx transport that serves them."""

    def __init__(self, ssl_context: Callable[[], SSLContext], limits: httpx.Limits) -> None:
        self._ssl_context = ssl_context
        self._limits = limits
        self._origins: set[Origin] = set()
        self._transport: httpx.AsyncHTTPTransport | None = None

    def serves(self, origin: Origin) -> bool:
        return origin in self._origins

    def remember(self, origin: Origin) -> None:
        self._origins.add(origin)

    async def send(self, delegated: Delegated) -> Reply:
        if self._transport is None:
            self._transport = httpx.AsyncHTTPTransport(
                verify=self._ssl_context(), http2=True, limits=self._limits
            )
        allowed = [(k, v) for k, v in delegated.headers if _allowed(k, v)]
        return await via_httpx(self._transport, delegated._replace(headers=allowed))

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None
