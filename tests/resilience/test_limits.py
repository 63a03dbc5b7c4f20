"""Limits: a slow or stuck peer must not pile up work or memory in the process serving it.

- A WatchProviders subscriber that never reads (raw HTTP/2 on a socket nobody reads) must
  not delay the other subscribers nor grow the config service's memory per version.
- A bridge client that reads an SSE response slowly must push back on the upstream
  (flow control) instead of the bridge buffering the stream.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import struct
import time

import httpx
import pytest

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import provider_pb2 as pb
from tests.fixtures.services import BRIDGE_TOKEN
from tests.fixtures.upstream import FakeUpstream, Seen
from tests.fixtures.waits import eventually
from tests.resilience.harness import (
    Admin,
    Procs,
    StreamRecorder,
    bridge_ready,
    bridge_url,
    database_revision,
    serve_providers,
)

# ------------------------------------------------------------- a stuck HTTP/2 gRPC client


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_str(value: bytes) -> bytes:
    return _hpack_int(len(value), 7, 0) + value


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def stuck_watch(port: int, token: str, node_id: str) -> socket.socket:
    """Open WatchProviders over raw HTTP/2 and never read a byte of the answer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    headers = (
        b"\x83"  # :method POST
        + b"\x86"  # :scheme http
        + _hpack_int(4, 4, 0)
        + _hpack_str(b"/aibridge.config.v1.ConfigService/WatchProviders")
        + _hpack_int(1, 4, 0)
        + _hpack_str(f"127.0.0.1:{port}".encode())
    )
    for name, value in (
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"authorization", f"Bearer {token}".encode()),
    ):
        headers += b"\x00" + _hpack_str(name) + _hpack_str(value)
    message = cs.WatchProvidersRequest(node_id=node_id).SerializeToString()
    sock.sendall(
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + _frame(0x4, 0, 0, b"")  # our SETTINGS (defaults: 64 KiB stream window)
        + _frame(0x4, 0x1, 0, b"")  # ACK of the server's SETTINGS, sent blind
        + _frame(0x1, 0x4, 1, headers)  # HEADERS, END_HEADERS
        + _frame(0x0, 0x1, 1, b"\x00" + struct.pack(">I", len(message)) + message)
    )
    return sock


async def test_stuck_subscriber_does_not_delay_others_nor_grow_memory(
    procs: Procs, sqlite_url: str
) -> None:
    """Twenty subscribers that never read, over 120 versions of a ~100 KB snapshot, neither slow a healthy subscriber (each version within 0.5 s) nor grow the config service's RSS by more than 40 MB."""
    service = await asyncio.to_thread(procs.config_service, sqlite_url)
    target = service.ready["target"]
    port = int(target.rsplit(":", 1)[1])
    admin = Admin(target)
    stuck: list[socket.socket] = []
    recorder = StreamRecorder(target, node_id="healthy")
    try:
        for i in range(5):
            keys = [f"sk-big-{i}-{j}-" + "x" * 4000 for j in range(5)]
            await admin.create_provider(
                f"big-{i}", pb.PROVIDER_TYPE_OPENAI, "https://example.invalid/v1/", keys
            )
        snapshot_size = len(
            (
                await admin.snapshot((("authorization", f"Bearer {BRIDGE_TOKEN}"),))
            ).SerializeToString()
        )
        assert snapshot_size > 100_000
        recorder.start()
        for i in range(20):
            stuck.append(stuck_watch(port, BRIDGE_TOKEN, f"stuck-{i}"))
        await eventually(lambda: admin_subscribers_at_least(admin, 21))
        for i in range(10):  # warm up: caches, allocator, first sends to the stuck ones
            await admin.create_token(f"warm-{i}")
        await recorder.wait_for(str(await admin.version()))
        baseline = service.rss_kib()
        lags = []
        for i in range(120):
            await admin.create_token(f"t-{i}")
            version = await admin.version()
            lags.append(await recorder.wait_for(str(version), within=5))
        grown_mib = (service.rss_kib() - baseline) / 1024
        subscribers = await admin.subscribers()
    finally:
        for sock in stuck:
            sock.close()
        await recorder.stop()
        await admin.close()
    assert max(lags) < 0.5, (
        f"healthy subscriber lag max {max(lags):.3f}s median {statistics.median(lags):.3f}s"
    )
    assert grown_mib < 40, f"config service RSS grew {grown_mib:.1f} MiB with stuck subscribers"
    # Stuck streams are either still registered (and behind) or dropped; never ahead.
    final = await asyncio.to_thread(database_revision, sqlite_url)
    for node, sub in subscribers.items():
        if node.startswith("stuck-") and sub.version_sent:
            assert int(sub.version_sent) <= final
    recorder.check(final)


async def admin_subscribers_at_least(admin: Admin, count: int) -> bool:
    return len(await admin.subscribers()) >= count


# -------------------------------------------------------------- slow SSE reader on bridge

EVENT = b"data: " + b'{"choices":[{"delta":{"content":"' + b"y" * 65_000 + b'"}}]}\n\n'
EVENTS = 1000  # ~65 MB in all


async def test_slow_sse_reader_pushes_back_on_the_upstream(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str
) -> None:
    """A client that stops reading a 65 MB SSE response makes the bridge stop reading the upstream (backpressure): the upstream cannot get more than a few MB ahead and the bridge's RSS stays flat."""
    written = 0
    finished = asyncio.Event()

    async def firehose(req: Seen, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal written
        w.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        for _ in range(EVENTS):
            w.write(f"{len(EVENT):x}\r\n".encode() + EVENT + b"\r\n")
            await w.drain()
            written += len(EVENT)
        w.write(b"0\r\n\r\n")
        await w.drain()
        finished.set()

    upstream.handlers["firehose"] = firehose
    firehose_keys = ["sk-fire-0000000000000000"]
    served = await serve_providers(
        procs,
        sqlite_url,
        ("firehose", pb.PROVIDER_TYPE_OPENAI, f"{upstream.url}/firehose/v1/", firehose_keys),
    )
    member = served.member
    bridge = await asyncio.to_thread(procs.bridge, served.target, "bridge-slow")

    await bridge_ready(bridge, served.version)
    baseline = bridge.rss_kib()
    host, port = bridge_url(bridge).removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), limit=2**16)
    body = b'{"model":"gpt-test","stream":true,"messages":[]}'
    writer.write(
        b"POST /firehose/v1/chat/completions HTTP/1.1\r\nhost: bridge\r\n"
        + f"authorization: Bearer {member}\r\ncontent-type: application/json\r\n".encode()
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    try:
        # The client reads nothing: how far can the upstream get ahead?
        transport = writer.transport
        transport.pause_reading()
        await asyncio.sleep(3)  # a window: the client reads nothing this long
        ahead_mib = written / 2**20
        stalled_rss_mib = (bridge.rss_kib() - baseline) / 1024
        transport.resume_reading()
        # Now a slow reader: small reads with pauses, then drain the rest.
        for _ in range(20):
            await reader.read(65536)
            await asyncio.sleep(0.01)  # pace: a slow reader
        tail = b""
        started = time.monotonic()
        while not tail.endswith(b"\r\n0\r\n\r\n"):
            chunk = await asyncio.wait_for(reader.read(2**20), 30)
            assert chunk, "the bridge closed the stream early"
            tail = (tail + chunk)[-64:]
        assert time.monotonic() - started < 60
    finally:
        writer.close()
    assert finished.is_set()
    assert ahead_mib < 16, f"upstream got {ahead_mib:.1f} MiB ahead of a client that read nothing"
    assert stalled_rss_mib < 32, f"bridge RSS grew {stalled_rss_mib:.1f} MiB for a stalled client"


@pytest.mark.slow
async def test_many_stuck_subscribers(procs: Procs, sqlite_url: str) -> None:
    """Two hundred never-reading subscribers over 300 versions leave a healthy subscriber's lag under 0.5 s."""
    service = await asyncio.to_thread(procs.config_service, sqlite_url)
    target = service.ready["target"]
    port = int(target.rsplit(":", 1)[1])
    admin = Admin(target)
    recorder = StreamRecorder(target, node_id="healthy").start()
    stuck = [stuck_watch(port, BRIDGE_TOKEN, f"stuck-{i}") for i in range(200)]
    try:
        lags = []
        for i in range(300):
            await admin.create_token(f"t-{i}")
            lags.append(await recorder.wait_for(str(await admin.version()), within=5))
    finally:
        for sock in stuck:
            sock.close()
        await recorder.stop()
        await admin.close()
    assert max(lags) < 0.5
    recorder.check()


async def test_client_chosen_model_names_do_not_grow_state_without_bound(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str
) -> None:
    """Fifteen hundred requests with distinct model names leave at most 500 model label values in the bridge's /metrics."""
    cardinal_keys = ["sk-card-000000000000000"]
    served = await serve_providers(
        procs,
        sqlite_url,
        ("cardinal", pb.PROVIDER_TYPE_OPENAI, f"{upstream.url}/v1/", cardinal_keys),
    )
    member, version = served.member, served.version
    bridge = await asyncio.to_thread(
        procs.bridge,
        served.target,
        "bridge-cardinal",
        AIBRIDGE_CIRCUIT_BREAKER_ENABLED="true",
    )
    async with httpx.AsyncClient(
        base_url=bridge_url(bridge), headers={"authorization": f"Bearer {member}"}, timeout=10
    ) as http:
        await bridge_ready(bridge, version)
        for i in range(1500):
            model = f"m-{i:05d}-" + "z" * 40
            response = await http.post(
                "/cardinal/v1/chat/completions", json={"model": model, "messages": []}
            )
            assert response.status_code == 200
        page = (await http.get("/metrics")).text
    models = {
        line.split('model="', 1)[1].split('"', 1)[0]
        for line in page.splitlines()
        if 'model="m-' in line
    }
    assert len(models) <= 500, f"{len(models)} model label values after 1500 requests"
