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

from data_plane.transport.models import Origin


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
    """The proxy (if any) each origin goes through, and httpx transports to reach them
    (made at once, so a malformed proxy URL stops the daemon at start, as in httpx)."""

    def __init__(self, limits: httpx.Limits, *, trust_env: bool) -> None:
        info = urllib.request.getproxies() if trust_env else {}
        entries = [e.strip() for e in info.get("no", "").split(",") if e.strip()]
        urls = {} if "*" in entries else _proxy_urls(info)
        transports = {
            url: httpx.AsyncHTTPTransport(proxy=url, limits=limits) for url in set(urls.values())
        }
        self._proxies = {scheme: transports[url] for scheme, url in urls.items()}
        self._bypass = [b for e in entries if (b := _Bypass.parse(e)) is not None]
        self._decided: dict[Origin, httpx.AsyncHTTPTransport | None] = {}

    def transport_for(self, origin: Origin) -> httpx.AsyncHTTPTransport | None:
        """The proxy transport for `origin`, or None when it is reached directly."""
        if not self._proxies:
            return None
        if origin not in self._decided:
            proxy = self._proxies.get(origin[0])
            bypassed = proxy is not None and any(b.matches(origin) for b in self._bypass)
            self._decided[origin] = None if bypassed else proxy
        return self._decided[origin]

    async def aclose(self) -> None:
        for transport in set(self._proxies.values()):
            await transport.aclose()
        self._proxies.clear()
        self._decided.clear()


def _proxy_urls(info: dict[str, str]) -> dict[bytes, str]:
    """Scheme -> proxy URL, from HTTP_PROXY / HTTPS_PROXY, else ALL_PROXY."""
    urls = {}
    for scheme in ("http", "https"):
        url = info.get(scheme) or info.get("all")
        if url:
            urls[scheme.encode()] = url if "://" in url else f"http://{url}"
    return urls
