"""The floor under propagation.py: what grpc.aio itself costs per stream per change.

A bare grpc.aio server on uvloop (the config service's own server options, no auth, no
database, no snapshot): N unary-stream calls, each a coroutine that writes one fixed
pre-serialized payload, then awaits a future that a broadcast resolves. The same client
shape as propagation.py (N streams over N/100 channels in a separate process). Measures
the server's RSS per open stream and its CPU per stream per change, so the config
service's figures can be read as a ratio to what any Python gRPC fan-out pays.

`--option NAME=INT` (repeatable) adds or overrides a server channel argument, to measure
what one does to the per-stream figures.

Memory per stream (branch fanmem): `--attribute` splits it into Python objects
(tracemalloc, the top allocation sites and object types per stream), native heap (glibc's
bytes in use beyond Python's) and the allocator (RSS beyond both): `bench/_memory.py`.
`--trim` calls `malloc_trim(0)` once the streams are open and measures again.
`--ack`: each stream makes one unary call per change (as a daemon's ReportStatus).
`--server-env NAME=VALUE` (repeatable) sets an environment variable for the server process
only (`MALLOC_ARENA_MAX=1`, `PYTHONMALLOC=malloc`, `GRPC_EXPERIMENTS=...`).

    python bench/grpc_floor.py --subscribers 1000 --changes 20
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import cpu_seconds, parser, percentile, rss_mb, table, write_result
from _memory import census, malloc_trim, per_stream

from aibridge.collector import YOUNG_THRESHOLD
from config_service.server import MAX_CONCURRENT_RPCS, grpc_options

METHOD = "/bench.Floor/Watch"
ACK_METHOD = "/bench.Floor/Ack"  # --ack: a unary call per stream per change, as daemons report


def server_main(
    payload_size: int,
    ports: Any,
    control: Any,
    results: Any,
    tuned: bool,
    options: list[tuple[str, int]],
    attribute: bool = False,
) -> None:
    payload = b"\n" + b"x" * payload_size
    if attribute:
        import tracemalloc

        tracemalloc.start()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        waiters: dict[asyncio.Future[None], None] = {}
        opened = 0

        async def watch(request: bytes, context: Any) -> None:
            nonlocal opened
            opened += 1
            while True:
                await context.write(payload)
                waiter = loop.create_future()
                waiters[waiter] = None
                try:
                    await waiter
                finally:
                    waiters.pop(waiter, None)

        async def ack(request: bytes, context: Any) -> bytes:
            return b""

        handler = grpc.method_handlers_generic_handler(
            "bench.Floor",
            {
                "Watch": grpc.unary_stream_rpc_method_handler(watch),
                "Ack": grpc.unary_unary_rpc_method_handler(ack),
            },
        )
        given = dict(options)
        merged = [(k, v) for k, v in grpc_options(False) if k not in given] + options
        server = grpc.aio.server(options=merged, maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS)
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        if tuned:  # as `aibridge config-service` does (aibridge.collector.tune_collector)
            gc.collect()
            gc.freeze()
            gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        idle = census(attribute)
        ports.put(port)
        while (command := await loop.run_in_executor(None, control.get)) != "stop":
            if command == "opened":
                results.put(opened)
            elif command == "census":  # the growth since idle, per open stream
                results.put(per_stream(idle, census(attribute), max(1, opened)))
            elif command == "trim":
                malloc_trim()
                results.put(per_stream(idle, census(False), max(1, opened)))
            else:  # "change": wake every stream at once
                woken = list(waiters)
                waiters.clear()
                for waiter in woken:
                    waiter.set_result(None)
                results.put(time.monotonic_ns())
        await server.stop(0)

    uvloop.run(run())


def client_main(
    port: int, count: int, channels: int, queue: Any, expected: Any, ack: bool = False
) -> None:
    """`count` streams; once `expected` is set, reports when each stream has that many
    changes (or after a minute: what is missing is counted, not waited for forever)."""

    async def run() -> None:
        chans = [
            grpc.aio.insecure_channel(f"127.0.0.1:{port}", [("grpc.use_local_subchannel_pool", 1)])
            for _ in range(channels)
        ]
        arrivals: list[list[int]] = [[] for _ in range(count)]

        async def follow(i: int) -> None:
            call = chans[i % channels].unary_stream(METHOD)(b"")
            report = chans[i % channels].unary_unary(ACK_METHOD)
            async for _ in call:
                arrivals[i].append(time.monotonic_ns())
                if ack and len(arrivals[i]) > 1:  # a change's, not the initial write's
                    await report(b"")

        tasks = [asyncio.create_task(follow(i)) for i in range(count)]
        while sum(1 for a in arrivals if a) < count:  # noqa: ASYNC110 - counters, not an event
            await asyncio.sleep(0.05)
        queue.put("ready")
        while expected.value < 0:  # noqa: ASYNC110 - a multiprocessing Value: not awaitable
            await asyncio.sleep(0.05)
        deadline = time.monotonic() + 60

        def behind() -> bool:  # a stream's first arrival is its initial write, not a change
            return any(len(a) <= expected.value for a in arrivals)

        while time.monotonic() < deadline and behind():  # noqa: ASYNC110 - counters, not an event
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        queue.put([a[1:] for a in arrivals])  # the first one is the initial write
        for chan in chans:
            await chan.close()

    uvloop.run(run())


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--changes", type=int, default=20)
    p.add_argument("--payload", type=int, default=2048, help="bytes per message")
    p.add_argument("--untuned", action="store_true", help="Python's default collector settings")
    p.add_argument("--option", action="append", default=[], help="NAME=INT server argument")
    p.add_argument("--ack", action="store_true", help="each stream: one unary call per change")
    p.add_argument("--attribute", action="store_true", help="Python / native / allocator split")
    p.add_argument("--trim", action="store_true", help="malloc_trim(0) with the streams open")
    p.add_argument("--server-env", action="append", default=[], help="NAME=VALUE for the server")
    args = p.parse_args()
    server_env = dict(e.partition("=")[::2] for e in args.server_env)
    options = [(k, int(v)) for k, _, v in (o.partition("=") for o in args.option)]
    n = args.subscribers
    ctx = mp.get_context("spawn")
    ports, control, results, queue = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Queue()
    expected = ctx.Value("i", -1)
    server = ctx.Process(
        target=server_main,
        args=(args.payload, ports, control, results, not args.untuned, options, args.attribute),
    )
    saved = {k: os.environ.get(k) for k in server_env}
    os.environ.update(server_env)  # a spawned process reads it at start: the server only
    server.start()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k)
        else:
            os.environ[k] = v
    memory: dict[str, Any] = {}
    client = None
    try:
        port = ports.get(timeout=60)
        time.sleep(0.5)
        assert server.pid is not None
        rss_idle = rss_mb(server.pid)
        client = ctx.Process(
            target=client_main, args=(port, n, max(1, n // 100), queue, expected, args.ack)
        )
        client.start()
        queue.get(timeout=240)
        time.sleep(1.0)
        control.put("opened")
        opened = results.get(timeout=30)
        rss_open = rss_mb(server.pid)
        if args.attribute or args.trim:
            control.put("census")
            memory["open"] = results.get(timeout=60)
        if args.trim:
            control.put("trim")
            memory["trimmed"] = results.get(timeout=60)
        pace = max(0.2, n / 20000)
        cpu0 = cpu_seconds(server.pid)
        sent: list[int] = []
        for _ in range(args.changes):
            control.put("change")
            sent.append(results.get(timeout=30))
            time.sleep(pace)
        expected.value = len(sent)
        arrivals: list[list[int]] = queue.get(timeout=120)
        cpu = cpu_seconds(server.pid) - cpu0
    finally:
        expected.value = max(expected.value, 0)
        control.put("stop")
        for proc in (client, server):
            if proc is not None:
                proc.join(30)
                if proc.is_alive():
                    proc.kill()
    delays = [(t - sent[i]) / 1e6 for stream in arrivals for i, t in enumerate(stream[: len(sent)])]
    missing = n * len(sent) - len(delays)
    result = {
        "subscribers": n,
        "opened": opened,
        "changes": args.changes,
        "payload_bytes": args.payload + 1,
        "collector": "default" if args.untuned else "tuned",
        "options": dict(options),
        "missing_deliveries": missing,
        "from_change_ms": {"p50": percentile(delays, 50), "p99": percentile(delays, 99)},
        "memory_per_stream_kb": round((rss_open - rss_idle) * 1024 / max(1, opened), 1),
        "cpu_per_stream_per_change_us": round(cpu * 1e6 / max(1, opened * len(sent)), 1),
    }
    if server_env:
        result["server_env"] = server_env
    if memory:
        result["memory"] = memory
        for name, part in memory.items():
            print(f"{name}: KB per stream {part['kb_per_stream']}")
            for site in part.get("sites_bytes_per_stream", []):
                print(f"  {site[1]:6d} B  {site[2]:5.2f} blocks  {site[0]}")
            for kind, (count, size) in part.get("objects_per_stream", {}).items():
                print(f"  {count:5.2f} x {kind} ({size} B)")
            if "gc_objects_bytes_per_stream" in part:
                print(f"  gc-tracked objects: {part['gc_objects_bytes_per_stream']} B per stream")
    print(
        table(
            ["subscribers", "missing", "p50 ms", "p99 ms", "KB/stream", "µs/stream/change"],
            [
                [
                    n,
                    missing,
                    result["from_change_ms"]["p50"],
                    result["from_change_ms"]["p99"],
                    result["memory_per_stream_kb"],
                    result["cpu_per_stream_per_change_us"],
                ]
            ],
        )
    )
    print(f"wrote {write_result(f'grpc-floor-{n}', result)}")
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
