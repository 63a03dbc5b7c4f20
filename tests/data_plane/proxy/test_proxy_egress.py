"""The SSRF guard: private/reserved ranges, allow-lists, and a dial that cannot be rebound."""

from __future__ import annotations

import ipaddress

import pytest
from proxy_fakes import Echo

from data_plane.errors import Blocked, DialError
from data_plane.proxy.egress import Egress, is_blocked

ip = ipaddress.ip_address
net = ipaddress.ip_network


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0",  # noqa: S104 - an address under test, not a bind
        "10.1.2.3",
        "100.64.0.1",
        "127.0.0.1",
        "169.254.169.254",
        "172.31.255.255",
        "192.0.0.8",
        "192.168.1.1",
        "198.19.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "::ffff:10.0.0.1",
        "64:ff9b::a00:1",
        "2002:a00:1::",
        "fd00::1",
        "fe80::1",
        # Other IPv6 spellings of blocked IPv4 addresses: compatible, SIIT, NAT64,
        # 6to4 and Teredo (client 10.0.0.1, obfuscated) all reach the embedded address.
        "::127.0.0.1",
        "::ffff:0:127.0.0.1",
        "::ffff:127.0.0.1",
        "64:ff9b::127.0.0.1",
        "::169.254.169.254",
        "::ffff:0:169.254.169.254",
        "::10.0.0.1",
        "::ffff:0:192.168.1.1",
        "2002:7f00:1::1",
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",
    ],
)
def test_private_and_reserved_addresses_are_blocked(address: str) -> None:
    """Every range of the reference list (and IPv4-mapped IPv6 forms) is blocked."""
    assert is_blocked(ip(address))


@pytest.mark.parametrize("address", ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "::ffff:1.1.1.1"])
def test_public_addresses_pass(address: str) -> None:
    """Public IPv4 and IPv6 addresses are not blocked."""
    assert not is_blocked(ip(address))


def test_allow_list_opens_only_its_own_range() -> None:
    """An allow-listed CIDR (either version) exempts exactly its addresses."""
    allowed = [net("10.1.0.0/16"), net("fd00:1::/32")]
    assert not is_blocked(ip("10.1.2.3"), allowed)
    assert not is_blocked(ip("::ffff:10.1.2.3"), allowed)
    assert not is_blocked(ip("fd00:1::5"), allowed)
    assert is_blocked(ip("10.2.0.1"), allowed)
    assert is_blocked(ip("fd00:2::5"), allowed)
    # The SIIT spelling is the allowed address itself; NAT64 stays blocked as a range.
    assert not is_blocked(ip("::ffff:0:10.1.2.3"), allowed)
    assert is_blocked(ip("64:ff9b::10.1.2.3"), allowed)


async def test_any_private_answer_blocks_the_host() -> None:
    """A name resolving to a public and a private address is refused as a whole."""

    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "10.0.0.5"]

    with pytest.raises(Blocked):
        await Egress(resolver=resolver).checked_addresses("mixed.example", 443)


async def test_resolution_failure_is_a_dial_error() -> None:
    """A name that does not resolve is a dial error (502), not a crash."""

    async def resolver(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    with pytest.raises(DialError):
        await Egress(resolver=resolver).open("nowhere.example", 443)


async def test_dial_goes_to_the_checked_address_without_resolving_again(echo: Echo) -> None:
    """The connection is made to the address that was checked: a rebinding resolver that
    would answer differently the second time is never asked again."""
    answers = [["127.0.0.1"], ["169.254.169.254"]]
    calls: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return answers[len(calls) - 1]

    egress = Egress([net("127.0.0.0/8")], rebinding)
    reader, writer = await egress.open("rebind.example", echo.port)
    writer.write(b"hi")
    assert await reader.readexactly(2) == b"hi"
    assert writer.get_extra_info("peername")[0] == "127.0.0.1"
    writer.close()
    assert calls == ["rebind.example"]


async def test_loopback_is_refused_without_an_allow_list(echo: Echo) -> None:
    """Without an allow-list a loopback destination is refused before any dial."""
    with pytest.raises(Blocked):
        await Egress().open("127.0.0.1", echo.port)
    assert echo.peers == []
