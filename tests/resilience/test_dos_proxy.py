"""Unauthenticated denial of service against a real aibridgeproxyd.

Abusive clients run in separate processes (tests/resilience/dos_clients.py, each with
its own fd limit) while a healthy client in the test sends one request per new
connection through the proxy to a local origin:

- a flood of idle connections far beyond the proxy's fd limit, plus slowloris clients:
  the proxy holds at most its connection cap (derived from its RLIMIT_NOFILE, lowered
  for the child to prove it), evicts the longest-waiting connections, closes the
  slowloris ones at the header deadline, and the healthy client keeps >= 99 % success;
- header bombs (128 MiB heads) and a 300 MiB response with dumps on: the proxy's peak
  RSS stays bounded.

The fast variants scale the flood down (2,000 idle + 200 slowloris against a proxy
with 1,024 fds); the slow one is the full 20,000 + 2,000 (the test machine's hard fd
limit is 20,000: the idle clients are spread over several processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fixtures.upstream import FakeUpstream, Seen
from tests.fixtures.waits import eventually
from tests.resilience.harness import (
    Admin,
    Proc,
    Procs,
    bridge_url,
    proxy_address,
    proxy_with_member,
)

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


@contextlib.contextmanager
def fd_limit(soft: int) -> Iterator[None]:
    """Processes spawned meanwhile inherit this RLIMIT_NOFILE soft limit."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def attack(mode: str, proxy: Proc, count: int, seconds: float) -> dict[str, object]:
    """Run `count` abusive connections of `mode` from child processes; their merged report."""
    host, port = proxy_address(proxy).rsplit(":", 1)
    per_child = 9000  # below the hard fd limit of one process
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.resilience.dos_clients",
            mode,
            host,
            port,
            str(min(per_child, count - start)),
            str(seconds),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        for start in range(0, count, per_child)
    ]
    outcomes: dict[str, int] = {}
    peak = sent = 0
    for child in children:
        out, _ = await child.communicate()
        report = json.loads(out)
        for key, n in report["outcomes"].items():
            outcomes[key] = outcomes.get(key, 0) + n
        peak += report["peak"]
        sent += report["sent"]
    return {"outcomes": outcomes, "peak": peak, "sent": sent}


@dataclass
class Healthy:
    """A well-behaved client: one request per new connection, through the proxy."""

    proxy: Proc
    token: str
    url: str
    ok: int = 0
    failed: int = 0

    async def run(self, until: float) -> None:
        proxy = f"http://u:{self.token}@{proxy_address(self.proxy)}"
        limits = httpx.Limits(max_keepalive_connections=0)  # a new connection every time
        async with httpx.AsyncClient(proxy=proxy, limits=limits, timeout=10) as http:
            while time.monotonic() < until:
                try:
                    reply = await http.get(self.url)
                    good = reply.status_code == 200
                except httpx.HTTPError:
                    good = False
                self.ok += good
                self.failed += not good
                await asyncio.sleep(0.05)  # a steady pace, not a flood of its own


async def watch_fds(pid: int, until: float, peaks: list[int]) -> None:
    while time.monotonic() < until:
        with contextlib.suppress(OSError):
            peaks.append(open_fds(pid))
        await asyncio.sleep(0.1)  # pace: a sampling interval


async def flood(
    procs: Procs,
    upstream: FakeUpstream,
    database_url: str,
    proxy_fds: int,
    idle: int,
    slowloris: int,
    seconds: float,
) -> None:
    with fd_limit(proxy_fds):
        proxy, token = await proxy_with_member(
            procs,
            database_url,
            AIBRIDGE_PROXY_ALLOWED_PORTS=str(upstream.port),
            AIBRIDGE_PROXY_HEADER_TIMEOUT="2s",
        )
    cap = int(proxy.ready["max_connections"])
    assert cap == (proxy_fds - 128) // 2
    healthy = Healthy(proxy, token, f"{upstream.url}/ok")
    until = time.monotonic() + seconds
    fds: list[int] = []
    _, _, idle_report, slow_report = await asyncio.gather(
        healthy.run(until),
        watch_fds(proxy.pid, until, fds),
        attack("idle", proxy, idle, seconds),
        attack("slowloris", proxy, slowloris, seconds),
    )
    total = healthy.ok + healthy.failed
    summary = (
        f"healthy {healthy.ok}/{total}, proxy fds peak {max(fds)} of {proxy_fds} (cap {cap}), "
        f"peak RSS {status_kib(proxy.pid, 'VmHWM') // 1024} MiB, idle {idle_report}, "
        f"slowloris {slow_report}"
    )
    print(summary)
    assert proxy.popen.poll() is None, summary
    assert total >= 20 and healthy.ok >= 0.99 * total, summary
    assert max(fds) < proxy_fds, summary
    slow_outcomes = slow_report["outcomes"]
    assert isinstance(slow_outcomes, dict)
    assert slow_outcomes.get("held", 0) == 0, summary  # every slowloris client was cut off
    assert status_kib(proxy.pid, "VmHWM") < 256 * 1024, summary


async def test_idle_and_slowloris_flood_leaves_healthy_clients_served(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str
) -> None:
    """2,000 idle and 200 slowloris connections against a proxy with 1,024 fds: healthy requests keep >= 99 % success."""
    await flood(procs, upstream, sqlite_url, proxy_fds=1024, idle=2000, slowloris=200, seconds=8)


@pytest.mark.slow
async def test_full_scale_flood_leaves_healthy_clients_served(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str
) -> None:
    """20,000 idle and 2,000 slowloris connections against a proxy with 4,096 fds: healthy requests keep >= 99 % success."""
    await flood(procs, upstream, sqlite_url, proxy_fds=4096, idle=20000, slowloris=2000, seconds=30)


async def test_header_bombs_leave_rss_bounded(procs: Procs, sqlite_url: str) -> None:
    """Eight clients sending 128 MiB request heads are cut off early; the proxy's RSS barely moves and /healthz answers."""
    proxy, _token = await proxy_with_member(procs, sqlite_url)
    before = status_kib(proxy.pid, "VmHWM")
    report = await attack("bomb", proxy, 8, 10)
    async with httpx.AsyncClient(timeout=5) as http:
        assert (await http.get(f"http://{proxy_address(proxy)}/healthz")).status_code == 200
    grown = (status_kib(proxy.pid, "VmHWM") - before) // 1024
    print(f"header bombs: {report}, peak RSS +{grown} MiB")
    assert report["outcomes"] == {"closed": 8}, report
    assert isinstance(report["sent"], int) and report["sent"] < 8 * 8 * MIB, report
    assert grown < 32, f"peak RSS grew {grown} MiB"


async def test_dumped_300_mib_response_leaves_rss_bounded(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str, tmp_path: Path
) -> None:
    """A 300 MiB provider response through the proxy with dumps on reaches the client whole; the proxy keeps only the dump cap."""
    size = 300 * MIB

    async def huge(_req: Seen, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(f"HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n".encode())
        piece = b"z" * MIB
        for _ in range(size // MIB):
            w.write(piece)
            await w.drain()

    upstream.handlers["v1"] = huge
    service = await asyncio.to_thread(procs.config_service, sqlite_url)
    target = str(service.ready["target"])
    admin = Admin(target)
    try:
        from aibridge.config.v1 import provider_pb2 as pb

        await admin.create_provider(
            "openai",
            pb.PROVIDER_TYPE_OPENAI,
            upstream.url + "/v1/",
            ["sk-pool-key-0000000000000000"],
        )
        token = await admin.create_token("member")
    finally:
        await admin.close()
    bridge = await asyncio.to_thread(procs.bridge, target)
    dumps = tmp_path / "dumps"
    proxy = await asyncio.to_thread(
        procs.proxy, target, bridge_url(bridge), "proxy-1", AIBRIDGE_DUMP_DIR=str(dumps)
    )
    await eventually(lambda: proxy.events("snapshot applied"), within=15)
    before = status_kib(proxy.pid, "VmHWM")
    received = 0
    async with (
        httpx.AsyncClient(proxy=f"http://u:{token}@{proxy_address(proxy)}", timeout=120) as http,
        http.stream("GET", f"{upstream.url}/v1/models/big") as reply,
    ):
        assert reply.status_code == 200, await reply.aread()
        async for chunk in reply.aiter_raw():
            received += len(chunk)
    assert received == size
    found: list[Path] = []
    await eventually(lambda: found.extend(dumps.rglob("*.resp.txt")) or found, within=15)
    grown = (status_kib(proxy.pid, "VmHWM") - before) // 1024
    print(f"300 MiB dumped response: peak RSS +{grown} MiB, dump {found[0].stat().st_size} bytes")
    assert found[0].stat().st_size < 9 * MIB
    assert grown < 64, f"peak RSS grew {grown} MiB"
