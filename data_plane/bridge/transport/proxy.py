"""Proxies from the environment: which origins go through HTTP(S)_PROXY / ALL_PROXY.

The rules are httpx's (and curl's) for NO_PROXY: `*` turns proxies off; `example.com`
matches it and its subdomains, `.example.com` only subdomains; an IP address matches
itself (a CIDR range, every address in it); `host:port` and `scheme://host` narrow the
match. Proxied origins are served by httpx's own proxy transports, one per proxy URL.
The environment is read once, when the transport is made (as httpx does); an entry that
is not a host, address or URL is ignored.
"""

from __future__ import annotations

import ipaddress
import urllib.request
from dataclasses import dataclass

import httpx

from data_plane.bridge.transport.models import Origin


@dataclass(frozen=True)
class _Bypass:
    """One NO_PROXY entry."""

    scheme: bytes | None
    host: str  # "" with `network`
    subdomains_only: bool
    port: int | None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    @classmethod
    def parse(cls, entry: str) -> _Bypass | None:
        try:
            return cls(None, "", False, None, ipaddress.ip_network(entry, strict=False))
        except ValueError:
            pass
        try:
            url = httpx.URL(entry if "://" in entry else f"all://{entry}")
        except httpx.InvalidURL:
            return None
        scheme = None if url.scheme == "all" else url.raw_scheme
        host = url.host.lower()
        return cls(scheme, host.removeprefix("."), host.startswith("."), url.port)

    def matches(self, origin: Origin) -> bool:
        scheme, host, port = origin
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        if (self.scheme is not None and self.scheme != scheme) or self.port not in (None, port):
            return False
        host = host.lower()
        return host.endswith("." + self.host) or (host == self.host and not self.subdomains_only)


class EnvProxies:
    """The proxy (if any) each origin goes through, and httpx transports to reach them."""

    def __init__(self, limits: httpx.Limits, *, trust_env: bool) -> None:
        info = urllib.request.getproxies() if trust_env else {}
        entries = [e.strip() for e in info.get("no", "").split(",") if e.strip()]
        self._proxies: dict[bytes, str] = {}
        if "*" not in entries:
            for scheme in (b"http", b"https"):
                url = info.get(scheme.decode()) or info.get("all")
                if url:
                    self._proxies[scheme] = url if "://" in url else f"http://{url}"
        self._bypass = [b for e in entries if (b := _Bypass.parse(e)) is not None]
        self._limits = limits
        self._decided: dict[Origin, httpx.AsyncHTTPTransport | None] = {}
        self._transports: dict[str, httpx.AsyncHTTPTransport] = {}

    def transport_for(self, origin: Origin) -> httpx.AsyncHTTPTransport | None:
        """The proxy transport for `origin`, or None when it is reached directly."""
        if not self._proxies:
            return None
        if origin not in self._decided:
            proxy = self._proxies.get(origin[0])
            if proxy is not None and any(b.matches(origin) for b in self._bypass):
                proxy = None
            self._decided[origin] = None if proxy is None else self._transport(proxy)
        return self._decided[origin]

    def _transport(self, proxy: str) -> httpx.AsyncHTTPTransport:
        if proxy not in self._transports:
            self._transports[proxy] = httpx.AsyncHTTPTransport(proxy=proxy, limits=self._limits)
        return self._transports[proxy]

    async def aclose(self) -> None:
        for transport in self._transports.values():
            await transport.aclose()
        self._transports.clear()
        self._decided.clear()
