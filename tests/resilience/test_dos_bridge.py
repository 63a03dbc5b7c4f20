"""Unauthenticated denial of service against the bridge: it must answer, not fall over.

- Idle sockets and slowloris clients (headers sent a line a second, never finished) in
  their thousands, from an attacker process that reopens what the bridge closes, while a
  healthy client opening a new connection per request keeps being served.
- Header bombs (huge header values) are cut off at the header cap without growing RSS.
- Body bombs (many large authenticated uploads at once) are bounded by the body budget.

The bridge is started with a lower file descriptor limit than the test's where a test
proves that the connection cap keeps it below its limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import multiprocessing
import os
import resource
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection

import httpx
import pytest

from aibridge.config.v1 import provider_pb2 as pb
from aibridge.envconfig import SettingsError
from data_plane.bridge.settings import BridgeSettings
from tests.fixtures.services import BRIDGE_TOKEN
from tests.fixtures.upstream import FakeUpstream, Seen
from tests.fixtures.waits import eventually
from tests.resilience.harness import (
    Proc,
    Procs,
    bridge_ready,
    bridge_url,
    serve_providers,
)

SLOW_HEAD = b"POST /dos/v1/chat/completions HTTP/1.1\r\nhost: bridge\r\n"


@contextlib.contextmanager
def nofile(soft: int) -> Iterator[None]:
    """This process's soft file descriptor limit set to `soft` (children inherit it)."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, before[1]), before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


@dataclass
class Stack:
    bridge: Proc
    member: str
    host: str
    port: int

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.bridge.pid}/fd"))

    def metric(self, page: str, reason: str) -> float:
        for line in page.splitlines():
            if line.startswith(f'aibridged_connections_closed_total{{reason="{reason}"}}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


async def start_stack(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str, bridge_nofile: int, **env: str
) -> Stack:
    served = await serve_providers(
        procs,
        sqlite_url,
        ("dos", pb.PROVIDER_TYPE_OPENAI, f"{upstream.url}/v1/", ["sk-dos-000000000000000000"]),
    )
    with nofile(bridge_nofile):  # inherited by the bridge only: spawned in this window
        bridge = procs.bridge(served.target, "bridge-dos", **env)
    await bridge_ready(bridge, served.version)
    host, port = bridge_url(bridge).removeprefix("http://").rsplit(":", 1)
    return Stack(bridge, served.member, host, int(port))


# ------------------------------------------------------------- the attacker, own process


class _Peer:
    __slots__ = ("head_sent", "slowloris", "sock")

    def __init__(self, sock: socket.socket, slowloris: bool) -> None:
        self.sock = sock
        self.slowloris = slowloris
        self.head_sent = False


def flood(
    address: tuple[str, int], idle: int, slow: int, reopen_per_s: int, out: Connection
) -> None:
    """Hold `idle` silent sockets and `slow` slowloris sockets until told to stop on `out`,
    reopening what the server closes (at most `reopen_per_s`); then send back the counts."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    poller = select.epoll()
    peers: dict[int, _Peer] = {}
    counts = dict.fromkeys(("opened", "closed", "answered_408", "answered_503", "errors"), 0)
    owed = [False] * idle + [True] * slow  # sockets to (re)open: slowloris or not
    began = last_drip = time.monotonic()
    while not out.poll(0):
        now = time.monotonic()
        allowed = max(0, int((now - began) * reopen_per_s) - counts["opened"] - counts["errors"])
        batch, owed = owed[:allowed], owed[allowed:]
        for slowloris in batch:
            sock = socket.socket()
            sock.setblocking(False)
            if sock.connect_ex(address) not in (0, errno.EINPROGRESS):
                counts["errors"] += 1
                sock.close()
                owed.append(slowloris)
                continue
            peers[sock.fileno()] = _Peer(sock, slowloris)
            poller.register(sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
            counts["opened"] += 1
        for fd, _event in poller.poll(0.1):
            peer = peers.pop(fd)
            poller.unregister(fd)
            try:
                answer = peer.sock.recv(4096)
            except OSError:
                answer = b""
            counts["closed"] += 1
            counts["answered_408"] += answer.startswith(b"HTTP/1.1 408")
            counts["answered_503"] += answer.startswith(b"HTTP/1.1 503")
            peer.sock.close()
            owed.append(peer.slowloris)
        if now - last_drip >= 1.0:  # each slowloris sends one more header line a second
            last_drip = now
            for peer in peers.values():
                if peer.slowloris:
                    with contextlib.suppress(OSError):  # still connecting: next time
                        peer.sock.send(b"x-slow: y\r\n" if peer.head_sent else SLOW_HEAD)
                        peer.head_sent = True
    out.send(counts)
    for peer in peers.values():
        peer.sock.close()


# ------------------------------------------------------------------------------ the tests


async def healthy_client(stack: Stack, requests: int) -> list[int | str]:
    """`requests` chat completions, each on a new connection; the status or the error."""
    outcomes: list[int | str] = []
    async with httpx.AsyncClient(
        base_url=bridge_url(stack.bridge),
        headers={"authorization": f"Bearer {stack.member}"},
        limits=httpx.Limits(max_keepalive_connections=0),
        timeout=10,
    ) as http:
        for _ in range(requests):
            try:
                response = await http.post(
                    "/dos/v1/chat/completions", json={"model": "gpt-test", "messages": []}
                )
                outcomes.append(response.status_code)
            except httpx.HTTPError as exc:
                outcomes.append(type(exc).__name__)
            await asyncio.sleep(0.02)  # pace: a steady legitimate client
    return outcomes


async def run_flood(
    procs: Procs,
    upstream: FakeUpstream,
    sqlite_url: str,
    *,
    bridge_nofile: int,
    attackers: list[tuple[int, int]],
    requests: int,
) -> None:
    """Attacker processes, each holding (idle, slowloris) sockets, against a bridge with
    `bridge_nofile` descriptors, while `healthy_client` makes `requests`."""
    stack = await start_stack(procs, upstream, sqlite_url, bridge_nofile)
    cap = int(stack.bridge.ready["max_connections"])
    assert cap == bridge_nofile // 2  # the default: half the descriptor limit
    baseline_rss = stack.bridge.rss_kib()
    spawn = multiprocessing.get_context("spawn")
    pipes = [spawn.Pipe() for _ in attackers]
    processes = [
        spawn.Process(
            target=flood, args=((stack.host, stack.port), idle, slow, 2000, theirs), daemon=True
        )
        for (idle, slow), (_ours, theirs) in zip(attackers, pipes, strict=True)
    ]
    for process in processes:
        process.start()
    peak_fds = 0

    async def sample() -> None:
        nonlocal peak_fds
        while True:
            peak_fds = max(peak_fds, stack.fds())
            await asyncio.sleep(0.1)  # pace: a sampling interval

    sampler = asyncio.create_task(sample())
    counts: dict[str, int] = {}
    try:
        await eventually(lambda: stack.fds() >= cap, within=60)  # the cap is reached
        began = time.monotonic()
        outcomes = await healthy_client(stack, requests)
        took = time.monotonic() - began
        rss_mib = (stack.bridge.rss_kib() - baseline_rss) / 1024
    finally:
        sampler.cancel()
        for ours, _theirs in pipes:
            ours.send("stop")
        for ours, _theirs in pipes:
            for key, value in (ours.recv() if ours.poll(30) else {}).items():
                counts[key] = counts.get(key, 0) + value
        for process in processes:
            process.join(10)
    async with httpx.AsyncClient(timeout=10) as http:
        page = (await http.get(bridge_url(stack.bridge) + "/metrics")).text
    ok = outcomes.count(200)
    failures = [o for o in outcomes if o != 200]
    print(
        f"flood {counts}; healthy {outcomes.count(200)}/{requests} ok in {took:.1f}s; "
        f"bridge fds peak {peak_fds}/{bridge_nofile}; RSS +{rss_mib:.0f} MiB"
    )
    assert ok >= 0.99 * requests, f"healthy client: {ok}/{requests} ok; failures {failures[:10]}"
    assert stack.bridge.popen.poll() is None, "the bridge died"
    assert peak_fds < bridge_nofile, f"bridge used {peak_fds} of {bridge_nofile} descriptors"
    assert counts["opened"] >= sum(idle + slow for idle, slow in attackers), counts
    assert stack.metric(page, "evicted_idle") > 0


async def test_idle_and_slowloris_flood_leaves_healthy_clients_served(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str
) -> None:
    """Two thousand idle sockets and 200 slowloris clients, reopened as they are closed, against a bridge limited to 1,024 descriptors leave a healthy client (a new connection per request) ≥ 99 % successful and the bridge below its descriptor limit."""
    await run_flood(
        procs, upstream, sqlite_url, bridge_nofile=1024, attackers=[(2000, 200)], requests=200
    )


@pytest.mark.slow
async def test_twenty_thousand_idle_sockets_and_two_thousand_slowloris(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str
) -> None:
    """Twenty thousand idle sockets and 2,000 slowloris clients (from two attacker processes, each under its own descriptor limit) against a bridge at its default cap (half of 20,000 descriptors) leave a healthy client ≥ 99 % successful."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    per_process = min(11_000, hard - 200)  # scaled down where the limit is lower
    idle = per_process * 10 // 11
    await run_flood(
        procs,
        upstream,
        sqlite_url,
        bridge_nofile=min(hard, 20_000),
        attackers=[(idle, per_process - idle)] * 2,
        requests=500,
    )


async def test_slowloris_clients_are_cut_off_at_the_header_timeout(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str
) -> None:
    """Fifty clients sending a header line a second and never ending their headers each get a 408 and a close once the header timeout (1 s here) has passed, and silent sockets are closed too."""
    stack = await start_stack(
        procs, upstream, sqlite_url, 1024, AIBRIDGE_BRIDGE_HEADER_TIMEOUT="1s"
    )
    streams = [await asyncio.open_connection(stack.host, stack.port) for _ in range(60)]
    slow = streams[:50]
    for _reader, writer in slow:
        writer.write(SLOW_HEAD)

    async def answer(reader: asyncio.StreamReader) -> bytes:
        with contextlib.suppress(ConnectionError):
            return await reader.read()  # until the bridge closes
        return b"(reset)"

    async def drip() -> None:
        while True:
            await asyncio.sleep(0.3)  # pace: one header line per slow client now and then
            for _reader, writer in slow:
                if not writer.is_closing():
                    with contextlib.suppress(ConnectionError):
                        writer.write(b"x-slow: y\r\n")

    dripping = asyncio.create_task(drip())
    try:
        answers = await asyncio.wait_for(
            asyncio.gather(*(answer(r) for r, _w in streams)), timeout=15
        )
    finally:
        dripping.cancel()
        for _reader, writer in streams:
            writer.close()
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers[:50]), answers[:3]
    assert all(a == b"" for a in answers[50:]), answers[50:]


async def test_heads_over_the_header_cap_get_431(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str
) -> None:
    """A 60 KiB request head is served, a 70 KiB one gets a 431 in the generic error format and a close, and 3,000 small pipelined requests in one write (190 KiB) are all served."""
    stack = await start_stack(procs, upstream, sqlite_url, 1024)

    async def get_with_header(size: int) -> bytes:
        reader, writer = await asyncio.open_connection(stack.host, stack.port)
        writer.write(
            b"GET /healthz HTTP/1.1\r\nhost: bridge\r\nconnection: close\r\n"
            + b"x-big: "
            + b"a" * size
            + b"\r\n\r\n"
        )
        try:
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()

    assert (await get_with_header(60 * 1024)).startswith(b"HTTP/1.1 200 ")
    refused = await get_with_header(70 * 1024)
    assert refused.startswith(b"HTTP/1.1 431 "), refused[:200]
    assert b'"code":"header_too_large"' in refused
    # Many small pipelined heads in one write are not one large head.
    reader, writer = await asyncio.open_connection(stack.host, stack.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nhost: bridge\r\n\r\n" * 3000)
    answers = b""
    try:
        while answers.count(b"HTTP/1.1 200 ") < 3000:
            chunk = await asyncio.wait_for(reader.read(2**16), 10)
            assert chunk, f"closed after {answers.count(b'HTTP/1.1 200 ')} answers"
            answers += chunk
    finally:
        writer.close()


async def test_header_bombs_do_not_grow_memory_nor_stall_the_bridge(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str
) -> None:
    """Eight clients each sending a 128 MiB header value are cut off, the bridge's RSS grows by less than 32 MiB and /healthz keeps answering within a second."""
    stack = await start_stack(procs, upstream, sqlite_url, 1024)
    baseline = stack.bridge.rss_kib()
    peak = baseline
    mib = b"a" * 2**20

    async def bomb() -> int:
        _reader, writer = await asyncio.open_connection(stack.host, stack.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: bridge\r\nx-bomb: ")
        sent = 0
        try:
            deadline = time.monotonic() + 30
            while sent < 128 and time.monotonic() < deadline:
                writer.write(mib)
                await writer.drain()
                sent += 1
        except ConnectionError:
            pass
        finally:
            writer.close()
        return sent

    bombs = asyncio.gather(*(bomb() for _ in range(8)))
    slowest = 0.0
    async with httpx.AsyncClient(base_url=bridge_url(stack.bridge), timeout=10) as http:
        while not bombs.done():
            started = time.monotonic()
            assert (await http.get("/healthz")).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            peak = max(peak, stack.bridge.rss_kib())
            await asyncio.sleep(0.05)  # pace: a sampling interval
    sent = await bombs
    grown_mib = (peak - baseline) / 1024
    print(f"header bombs: RSS +{grown_mib:.1f} MiB, /healthz slowest {slowest:.3f}s, sent {sent}")
    assert grown_mib < 32, f"bridge RSS grew {grown_mib:.0f} MiB; MiB sent per bomb {sent}"
    assert max(sent) < 128, f"a bomb sent all of its 128 MiB: {sent}"
    assert slowest < 1.0, f"/healthz took {slowest:.2f}s during the bombs"


async def test_body_bombs_are_bounded_by_the_body_budget(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str
) -> None:
    """Forty authenticated 31 MiB uploads at once, to an upstream that holds them, get a 503 (provider's format, Retry-After) past the default 128 MiB body budget; the bridge's RSS grows by less than 320 MiB (2.5 x the budget; 3.6 GB before), and the admitted ones complete."""
    release = asyncio.Event()

    async def holding(req: Seen, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await release.wait()
        await upstream.answer(req, w)

    upstream.handlers["v1"] = holding
    stack = await start_stack(procs, upstream, sqlite_url, 1024)
    baseline = stack.bridge.rss_kib()
    size = 31 * 2**20
    chunk = b" " * 2**20
    refused: list[bytes] = []

    async def upload() -> int:
        reader, writer = await asyncio.open_connection(stack.host, stack.port)
        writer.write(
            b"POST /dos/v1/chat/completions HTTP/1.1\r\nhost: bridge\r\n"
            + f"authorization: Bearer {stack.member}\r\ncontent-length: {size}\r\n\r\n".encode()
        )
        head = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
        try:
            with contextlib.suppress(ConnectionError):
                for _ in range(31):
                    if head.done():
                        break
                    writer.write(chunk)
                    await writer.drain()
            answer = await asyncio.wait_for(head, 60)
            status = int(answer.split(b" ", 2)[1])
            if status == 503:
                length = int(answer.lower().split(b"content-length: ", 1)[1].split(b"\r\n")[0])
                refused.append(answer + await reader.readexactly(length))
            return status
        finally:
            writer.close()

    uploads = asyncio.gather(*(upload() for _ in range(40)))
    peak = baseline

    def settled() -> bool:
        nonlocal peak
        peak = max(peak, stack.bridge.rss_kib())
        at_upstream = sum(1 for r in upstream.seen if r.path.endswith("/chat/completions"))
        return at_upstream + len(refused) >= 40

    try:
        await eventually(settled, within=120, every=0.1)
    finally:
        release.set()
    statuses = await asyncio.wait_for(uploads, 60)
    grown_mib = (peak - baseline) / 1024
    print(f"body bombs: RSS +{grown_mib:.0f} MiB; statuses {sorted(statuses)}")
    # 4 x 31 MiB held, plus each body's chunks while it is joined, plus allocator slack.
    assert grown_mib < 320, f"bridge RSS grew {grown_mib:.0f} MiB for 40 x 31 MiB uploads"
    assert statuses.count(200) >= 1 and statuses.count(200) + statuses.count(503) == 40, statuses
    assert statuses.count(503) >= 30, statuses
    assert all(b"retry-after: 1" in r and b'"code":"body_buffer_full"' in r for r in refused)


async def test_a_body_that_does_not_arrive_in_time_is_answered_408(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str
) -> None:
    """A body that stops short of its declared length is answered 408 (provider's format) once AIBRIDGE_BRIDGE_BODY_TIMEOUT passes, and the bytes it held are given back to the body budget."""
    stack = await start_stack(
        procs,
        upstream,
        sqlite_url,
        1024,
        AIBRIDGE_BRIDGE_BODY_TIMEOUT="1s",
        AIBRIDGE_BRIDGE_BODY_BUFFER_BYTES="3000",
    )
    reader, writer = await asyncio.open_connection(stack.host, stack.port)
    try:
        writer.write(
            b"POST /dos/v1/chat/completions HTTP/1.1\r\nhost: bridge\r\n"
            + f"authorization: Bearer {stack.member}\r\ncontent-length: 2001\r\n\r\n".encode()
            + b" " * 2000  # held: the last byte never comes
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 408 "), head
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n")[0])
        assert b'"code":"request_timeout"' in await reader.readexactly(length)
    finally:
        writer.close()
    padding = "x" * 2000  # fits the 3000-byte budget only if the 2000 bytes were given back
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(
            f"http://{stack.host}:{stack.port}/dos/v1/chat/completions",
            headers={"authorization": f"Bearer {stack.member}"},
            json={"model": "gpt-test", "messages": [{"role": "user", "content": padding}]},
        )
    assert answer.status_code == 200, answer.text


async def test_a_body_arriving_in_pieces_after_its_headers_is_forwarded_whole(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str
) -> None:
    """A body that arrives after its headers, in pieces, within AIBRIDGE_BRIDGE_BODY_TIMEOUT is waited for and reaches the upstream whole."""
    stack = await start_stack(procs, upstream, sqlite_url, 1024, AIBRIDGE_BRIDGE_BODY_TIMEOUT="5s")
    body = json.dumps(
        {"model": "gpt-test", "messages": [{"role": "user", "content": "x" * 3000}]}
    ).encode()
    reader, writer = await asyncio.open_connection(stack.host, stack.port)
    try:
        writer.write(
            b"POST /dos/v1/chat/completions HTTP/1.1\r\nhost: bridge\r\n"
            + f"authorization: Bearer {stack.member}\r\n".encode()
            + f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        )
        for piece in (body[:1000], body[1000:2000], body[2000:]):
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.write(piece)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 200 "), head
    finally:
        writer.close()
    assert upstream.seen[-1].body == body


def test_bad_connection_limits_are_each_reported() -> None:
    """A zero header timeout, a header cap under 1 KiB, a negative connection cap, a zero body budget and a zero body timeout are each reported by name."""
    names = (
        "AIBRIDGE_BRIDGE_HEADER_TIMEOUT",
        "AIBRIDGE_BRIDGE_MAX_HEADER_BYTES",
        "AIBRIDGE_BRIDGE_MAX_CONNECTIONS",
        "AIBRIDGE_BRIDGE_BODY_BUFFER_BYTES",
        "AIBRIDGE_BRIDGE_BODY_TIMEOUT",
    )
    with pytest.raises(SettingsError) as info:
        BridgeSettings.from_env(
            dict(zip(names, ("0s", "100", "-1", "0", "0s"), strict=True))
            | {"AIBRIDGE_BRIDGE_TOKEN": BRIDGE_TOKEN}
        )
    problems = info.value.problems
    assert [any(p.startswith(name) for p in problems) for name in names] == [True] * 5, problems
