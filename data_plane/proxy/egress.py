"""Outbound connections for tunnels and plain forwards, with the SSRF guard.

A destination is resolved once, every address it resolves to is checked against the
private/reserved ranges, and the connection is then made to a checked address (never by
name again): a DNS answer that changes between the check and the dial (rebinding)
cannot smuggle the proxy into the internal network. Hosts with any blocked address are
refused outright, as a name that resolves partly inside is suspicious in itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable

from data_plane.errors import Blocked, DialError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

# Reference §6's list, plus the unspecified address and multicast (never a TCP peer), the
# deprecated IPv6 site-local range (RFC 3879: still routed inside some networks, and no
# public address) and the discard-only prefix.
BLOCKED: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "64:ff9b::/96",
        "100::/64",
        "64:ff9b:1::/48",
        "2002::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
CONNECT_TIMEOUT = 10.0


# IPv6 prefixes whose last 32 bits are an IPv4 address that the packet ends up reaching
# (or that a relay would): ::a.b.c.d (IPv4-compatible), ::ffff:0:a.b.c.d (SIIT),
# 64:ff9b::a.b.c.d (NAT64). IPv4-mapped, 6to4 and Teredo have their own accessors.
_EMBEDDING = tuple(ipaddress.IPv6Network(n) for n in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96"))


def address_forms(address: IPAddress) -> list[IPAddress]:
    """The address itself, plus every IPv4 address its IPv6 spelling embeds."""
    forms: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            forms.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            forms.append(address.sixtofour)
        if address.teredo is not None:
            forms.extend(address.teredo)
        if any(address in net for net in _EMBEDDING):
            forms.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return forms


def is_blocked(address: IPAddress, allowed: Iterable[IPNetwork] = ()) -> bool:
    """Whether any form of the address (see address_forms) is in a blocked range that
    the allow-list does not open: `[::ffff:0:127.0.0.1]` is judged as 127.0.0.1 too."""
    allowed = tuple(allowed)
    # `in` is False across IP versions, so mixed lists need no special case.
    return any(
        any(form in net for net in BLOCKED) and not any(form in net for net in allowed)
        for form in address_forms(address)
    )


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host (IP literals come back as is)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for *_, sockaddr in infos:
        ip = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 zone id
        if ip not in seen:
            seen.append(ip)
    return seen


class Egress:
    """Resolves, checks and dials destinations; `resolver` is replaceable for tests."""

    def __init__(
        self, allowed_private: Iterable[IPNetwork] = (), resolver: Resolver = system_resolve
    ) -> None:
        self.allowed_private = tuple(allowed_private)
        self._resolve = resolver

    async def checked_addresses(self, host: str, port: int) -> list[str]:
        """The host's addresses, all of them outside the blocked ranges (else Blocked)."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                addresses = await self._resolve(host.strip("[]"), port)
        except (OSError, TimeoutError, UnicodeError) as exc:
            raise DialError(f"cannot resolve {host}") from exc
        if not addresses:
            raise DialError(f"cannot resolve {host}")
        for ip in addresses:
            if is_blocked(ipaddress.ip_address(ip), self.allowed_private):
                raise Blocked(f"{host} resolves to a private or reserved address")
        return addresses

    async def open(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection to a checked address of host (tried in resolver order)."""
        addresses = await self.checked_addresses(host, port)
        for ip in addresses:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    return await asyncio.open_connection(ip, port)
            except (OSError, TimeoutError):
                continue
        raise DialError(f"cannot connect to {host}:{port}")
