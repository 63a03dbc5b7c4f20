"""The SSRF guard of a real aibridgeproxyd, spelling by spelling.

Every spelling of a loopback, link-local or RFC 1918 address (IPv6 forms embedding the
IPv4 address, and the decimal/octal/hex IPv4 forms the system resolver accepts) is
refused with 403, through CONNECT and through an absolute-form http:// request, by a
proxy without an allow-list. A refusal happens before any dial, so a 502 (dialled,
failed) means the guard let the address through.
"""

from __future__ import annotations

import asyncio
import base64

from tests.resilience.harness import Procs, proxy_address, proxy_with_member

PORT = 443  # allowed by default: only the address decides
SPELLINGS = [
    # loopback
    "127.0.0.1",
    "[::1]",
    "[::127.0.0.1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:0:127.0.0.1]",
    "[64:ff9b::127.0.0.1]",
    "[::7f00:1]",
    "[0:0:0:0:0:ffff:7f00:1]",
    "2130706433",
    "0177.0.0.1",
    "0x7f.1",
    "127.1",
    # link-local (cloud metadata)
    "169.254.169.254",
    "[::169.254.169.254]",
    "[::ffff:169.254.169.254]",
    "[::ffff:0:169.254.169.254]",
    "[64:ff9b::169.254.169.254]",
    "[fe80::1]",
    "0xa9fea9fe",
    # RFC 1918
    "[::10.0.0.1]",
    "[::ffff:0:10.0.0.1]",
    "[::ffff:192.168.0.1]",
    "[::172.16.0.1]",
    "012.0.0.1",
    "3232235521",
    # deprecated IPv6 site-local (the private range of old) and the discard-only prefix
    "[fec0::1]",
    "[fec0::ffff:10.0.0.1]",
    "[100::1]",
    # names the system resolver maps to loopback
    "localhost",
    "localhost.",
    "127.0.0.1.",
]


async def status(proxy: str, token: str, method: str, target: str) -> int:
    """The proxy's answer to one request written by hand (clients normalise some spellings)."""
    host, port = proxy.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    auth = base64.b64encode(f"u:{token}".encode()).decode()
    writer.write(
        f"{method} {target} HTTP/1.1\r\nhost: x\r\nproxy-authorization: Basic {auth}\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n"), 15)
    writer.close()
    return int(head.split(b" ", 2)[1])


async def test_every_spelling_of_a_private_address_is_refused(
    procs: Procs, sqlite_url: str
) -> None:
    """Loopback, link-local and private addresses in every spelling get 403 through CONNECT and plain forwards."""
    proxy, token = await proxy_with_member(
        procs, sqlite_url, AIBRIDGE_PROXY_ALLOWED_PRIVATE_CIDRS=""
    )
    address = proxy_address(proxy)
    passed: list[str] = []
    for spelling in SPELLINGS:
        tunnel = await status(address, token, "CONNECT", f"{spelling}:{PORT}")
        forward = await status(address, token, "GET", f"http://{spelling}:{PORT}/")
        if (tunnel, forward) != (403, 403):
            passed.append(f"{spelling}: CONNECT {tunnel}, GET {forward}")
    assert passed == [], passed
