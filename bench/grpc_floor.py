"""The floor under propagation.py: what grpc.aio itself costs per stream per change.

A bare grpc.aio server on uvloop (the config service's own server options, no auth, no
database, no snapshot): N unary-stream calls, each a coroutine that writes one fixed
pre-serialized payload, then awaits a future that a broadcast resolves. The same client
shape as propagation.py (N streams over N/100 channels in a separate process). Measures
the server's RSS per open stream and its CPU per stream per change, so the config
service's figures can be read as a ratio to what any Python gRPC fan-out pays.

`--option NAME=INT` (repeatable) adds or overrides a server channel argument, to measure
what one does to the per-stream figures.

Levers (branch fancpu), each changing the server only: `--env NAME=VALUE` (repeatable)
sets an environment variable in the server process alone before grpc starts
(`GRPC_EXPERIMENTS`, `GRPC_POLL_STRATEGY`, `GRPC_ENABLE_FORK_SUPPORT`); `--handler`
the stream's shape (`write`: a coroutine awaiting `context.write` in a loop, the service's
shape; `generator`: an async generator yielding the payload; `broadcast`: the handler
only parks its context and one task per change starts every stream's write together;
`drive`: the same without a task per write, each write's coroutine stepped by hand);
`--sync`: the threaded `grpc.server`, one generator per stream on a pool thread;
`--loop asyncio`: Python's default event loop instead of uvloop; `--switch-interval S`:
`sys.setswitchinterval` (the GIL hand-off between grpc.aio's poller thread and the loop);
`--gc-off`: the collector disabled outright (the tuned collector's ceiling). The
subscriber process's CPU per stream per change is reported beside the server's.

Memory per stream (branch fanmem): `--attribute` splits it into Python objects
(tracemalloc, the top allocation sites and object types per stream), native heap (glibc's
bytes in use beyond Python's) and the allocator (RSS beyond both): `bench/_memory.py`.
`--trim` calls `malloc_trim(0)` once the streams are open and measures again.
`--ack`: each stream makes one unary call per change (as a daemon's ReportStatus).
`--server-env` is `--env` by its other name (`MALLOC_ARENA_MAX=1`, `PYTHONMALLOC=malloc`).

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
    lever: dict[str, Any] | None = None,
    attribute: bool = False,
) -> None:
    payload = b"\n" + b"x" * payload_size
    if attribute:
        import tracemalloc

        tracemalloc.start()
    lever = lever or {}
    if lever.get("switch_interval"):
        sys.setswitchinterval(lever["switch_interval"])
    if lever.get("sync"):
        sync_server_main(payload, ports, control, results, tuned, options, lever)
        return
    shape = lever.get("handler", "write")

    async def run() -> None:
        loop = asyncio.get_running_loop()
        waiters: dict[asyncio.Future[None], None] = {}
        opened = 0

        async def next_change() -> None:
            waiter = loop.create_future()
            waiters[waiter] = None
            try:
                await waiter
            finally:
                waiters.pop(waiter, None)

        async def watch(request: bytes, context: Any) -> None:
            nonlocal opened
            opened += 1
            while True:
                await context.write(payload)
                await next_change()

        async def watch_generator(request: bytes, context: Any) -> Any:
            nonlocal opened
            opened += 1
            while True:
                yield payload
                await next_change()

        parked: dict[Any, None] = {}
        in_flight: dict[Any, Any] = {}  # a write in flight (drive: None = another one due)

        async def watch_parked(request: bytes, context: Any) -> None:
            nonlocal opened
            opened += 1
            await context.write(payload)
            parked[context] = None
            done = loop.create_future()
            try:
                await done  # until the call ends; the broadcast writes for it
            finally:
                parked.pop(context, None)

        def broadcast() -> None:
            """One write per parked stream, all started at once (one in flight per call:
            a stream whose last write is still in flight gets this one after it)."""
            for context in list(parked):
                previous = in_flight.get(context)
                if previous is not None and not previous.done():
                    previous.add_done_callback(
                        lambda _f, c=context: in_flight.__setitem__(
                            c, asyncio.ensure_future(c.write(payload))
                        )
                    )
                else:
                    in_flight[context] = asyncio.ensure_future(context.write(payload))

        def drive(context: Any) -> None:
            """Start context.write without a task: step its coroutine by hand; it yields
            the future grpc resolves when the batch completes, and a callback finishes it
            (a stream whose write is in flight gets the next one after it)."""
            if context in in_flight:
                in_flight[context] = None  # once the current write completes
                return
            step(context, context.write(payload))

        def step(context: Any, coro: Any) -> None:
            try:
                future = coro.send(None)
            except StopIteration:
                if in_flight.pop(context, 0) is None:
                    step(context, context.write(payload))
                return
            except BaseException:
                in_flight.pop(context, None)
                return
            in_flight.setdefault(context, future)
            future._asyncio_future_blocking = False
            future.add_done_callback(lambda _f: step(context, coro))

        async def ack(request: bytes, context: Any) -> bytes:
            return b""

        handlers = {
            "write": watch,
            "generator": watch_generator,
            "broadcast": watch_parked,
            "drive": watch_parked,
        }
        handler = grpc.method_handlers_generic_handler(
            "bench.Floor",
            {
                "Watch": grpc.unary_stream_rpc_method_handler(handlers[shape]),
                "Ack": grpc.unary_unary_rpc_method_handler(ack),
            },
        )
        given = dict(options)
        merged = [(k, v) for k, v in grpc_options(False) if k not in given] + options
        server = grpc.aio.server(options=merged, maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS)
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        tune(tuned, lever)
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
            elif shape == "broadcast":
                broadcast()
                results.put(time.monotonic_ns())
            elif shape == "drive":  # the writes start here, not in later loop turns
                started = time.monotonic_ns()
                for context in list(parked):
                    drive(context)
                results.put(started)
            else:  # "change": wake every stream at once
                woken = list(waiters)
                waiters.clear()
                for waiter in woken:
                    waiter.set_result(None)
                results.put(time.monotonic_ns())
        await server.stop(0)

    if lever.get("loop") == "asyncio":
        asyncio.run(run())
    else:
        uvloop.run(run())


def tune(tuned: bool, lever: dict[str, Any]) -> None:
    if tuned:  # as `aibridge config-service` does (aibridge.collector.tune_collector)
        gc.collect()
        gc.freeze()
        gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    if lever.get("gc_off"):
        gc.disable()


def sync_server_main(
    payload: bytes,
    ports: Any,
    control: Any,
    results: Any,
    tuned: bool,
    options: list[tuple[str, int]],
    lever: dict[str, Any],
) -> None:
    """The threaded server: one pool thread per open stream, a generator each, woken by
    one condition per change."""
    import threading
    from concurrent import futures

    changed = threading.Condition()
    generation = 0
    opened = 0
    stopping = False

    def watch(request: bytes, context: Any) -> Any:
        nonlocal opened
        with changed:
            opened += 1
        seen = generation
        yield payload
        while True:
            with changed:
                while generation == seen and not stopping:
                    changed.wait()
                if stopping:
                    return
                seen = generation
            yield payload

    handler = grpc.method_handlers_generic_handler(
        "bench.Floor", {"Watch": grpc.unary_stream_rpc_method_handler(watch)}
    )
    given = dict(options)
    merged = [(k, v) for k, v in grpc_options(False) if k not in given] + options
    pool = futures.ThreadPoolExecutor(max_workers=lever["threads"])
    server = grpc.server(pool, options=merged, maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    tune(tuned, lever)
    ports.put(port)
    while (command := control.get()) != "stop":
        if command == "opened":
            results.put(opened)
        else:
            with changed:
                generation += 1
                changed.notify_all()
            results.put(time.monotonic_ns())
    with changed:
        stopping = True
        changed.notify_all()
    server.stop(0)


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
    p.add_argument(
        "--env", "--server-env", action="append", default=[], help="NAME=VALUE for the server"
    )
    p.add_argument(
        "--handler", choices=["write", "generator", "broadcast", "drive"], default="write"
    )
    p.add_argument("--sync", action="store_true", help="threaded grpc.server, a thread a stream")
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    p.add_argument("--switch-interval", type=float, default=0.0, help="sys.setswitchinterval")
    p.add_argument("--gc-off", action="store_true", help="gc.disable() once serving")
    p.add_argument("--ack", action="store_true", help="each stream: one unary call per change")
    p.add_argument("--attribute", action="store_true", help="Python / native / allocator split")
    p.add_argument("--trim", action="store_true", help="malloc_trim(0) with the streams open")
    args = p.parse_args()
    options = [(k, int(v)) for k, _, v in (o.partition("=") for o in args.option)]
    env = dict(e.partition("=")[::2] for e in args.env)
    lever = {
        "handler": args.handler,
        "sync": args.sync,
        "threads": args.subscribers + 16,
        "loop": args.loop,
        "switch_interval": args.switch_interval,
        "gc_off": args.gc_off,
    }
    n = args.subscribers
    ctx = mp.get_context("spawn")
    ports, control, results, queue = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Queue()
    expected = ctx.Value("i", -1)
    server = ctx.Process(
        target=server_main,
        args=(
            args.payload,
            ports,
            control,
            results,
            not args.untuned,
            options,
            lever,
            args.attribute,
        ),
    )
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the spawned server inherits it; the client does not
    try:
        server.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
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
        assert client.pid is not None
        client_cpu0 = cpu_seconds(client.pid)
        sent: list[int] = []
        for _ in range(args.changes):
            control.put("change")
            sent.append(results.get(timeout=30))
            time.sleep(pace)
        expected.value = len(sent)
        arrivals: list[list[int]] = queue.get(timeout=120)
        cpu = cpu_seconds(server.pid) - cpu0
        client_cpu = cpu_seconds(client.pid) - client_cpu0
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
        "env": env,
        "lever": {k: v for k, v in lever.items() if k != "threads"},
        "subscriber_cpu_per_stream_per_change_us": round(
            client_cpu * 1e6 / max(1, opened * len(sent)), 1
        ),
    }
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
    print(
        f"subscribers' CPU: {result['subscriber_cpu_per_stream_per_change_us']} µs/stream/change;"
        f" lever {result['lever']} env {env}"
    )
    print(f"wrote {write_result(f'grpc-floor-{n}', result)}")
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
