"""Opening one upstream connection: TCP, TLS with ALPN, and the protocol the server chose.

https connections offer ALPN ["h2", "http/1.1"]; a server that picks h2 gets its
connection closed at once and the caller is told (the origin moves to http2.py).
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl

import httpx

from data_plane.transport.http11 import HTTP11Connection
from data_plane.transport.models import Origin

_ALPN = ["h2", "http/1.1"]


class Connector:
    """Opens HTTP/1.1 connections; shares its TLS context with the HTTP/2 fallback."""

    def __init__(self, ssl_context: ssl.SSLContext | None) -> None:
        self._ssl = ssl_context
        self._alpn = False

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context(trust_env=True)
        if not self._alpn:  # httpcore may set its own order later; we check what was chosen
            self._ssl.set_alpn_protocols(_ALPN)
            self._alpn = True
        return self._ssl

    async def connect(self, origin: Origin, seconds: float | None) -> HTTP11Connection | None:
        """A new HTTP/1.1 connection, or None when the TLS server chose h2."""
        scheme, host, port = origin
        tls = scheme == b"https"
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(seconds):
                _, conn = await loop.create_connection(
                    functools.partial(HTTP11Connection, loop),
                    host,
                    port,
                    ssl=self.ssl_context() if tls else None,
                    server_hostname=host if tls else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        conn.origin = origin
        transport = conn.transport
        assert transport is not None  # set by connection_made before create_connection returns
        tls_object = transport.get_extra_info("ssl_object") if tls else None
        if tls_object is not None and tls_object.selected_alpn_protocol() == "h2":
            conn.close()
            return None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn
