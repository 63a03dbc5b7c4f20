"""Propagation: admin write → every subscriber has the new snapshot (DESIGN §10).

Starts one `aibridge config-service` process (SQLite, or --database-url: PostgreSQL, in
a fresh schema dropped afterwards), opens N WatchProviders streams multiplexed over C
gRPC channels from separate subscriber processes, then makes W admin writes
(CreateToken: it changes the snapshot) one after another. For each write and each
subscriber: time from the moment the write was sent to the moment that subscriber read
a snapshot with the new version (so this includes the commit itself), and from the
write's acknowledgement (negative: the snapshot reached the subscriber before the
admin's answer did; it is published first).

The fan-out's cost is measured in the same run: the same W writes, paced the same way,
are first made with no subscriber connected; the service's CPU for those (commit,
rebuild, idle loops) is subtracted from its CPU for the writes with N streams open, and
the rest over N * W is the CPU per stream per change (the subscribers' own CPU is
reported beside it: they share the machine). Memory per stream: the service's RSS with
the N streams open minus its RSS before they connected, over N. `--profile FILE`
attaches py-spy (when installed) to the service for the writes with subscribers and
writes its collapsed stacks (`--native`: C frames too) for bench/profile_shares.py.
`--ack`: every stream reports each snapshot it read (ReportStatus), as the daemons do.
`--workers N`: the service as `aibridge config-service --workers N`; its CPU and memory
are summed over the supervising parent and its workers, and each worker's CPU is shown
(the writes go through one connection, so through one worker; the others learn of them
by the change signal). Every subscriber channel is its own TCP connection (a local
subchannel pool), so the kernel can spread the connections over the workers.
`--lean`: cheaper subscribers (they share the machine with the service): each keeps a
response's bytes as grpc hands them over (a whole message) and reads only the snapshot's
version from the protobuf wire format (`snapshot_version`: field 1 of the response, then
field 1 of the snapshot; the nested length must match the message), instead of decoding
the whole snapshot. What the service sends is unchanged.
`--c-subscribers`: the subscribers are bench/_subscribers.c (compiled at run time with gcc
against Debian's libnghttp2; bench/_c_subscribers.py), one epoll process by default
(`--processes`) opening the N streams over the same N/100 HTTP/2 connections, reading the
version from the wire as `--lean` does, for a few µs of CPU per stream per change: the
service's figures without a load generator as costly as the service beside it on the
same cores. A stream refused or ended by the server is counted, as are malformed messages.
Every run also reports the distinct sequences of versions the streams saw (one when all saw
the same), per write the medians of its answer, first and last stream (the fan-out's span),
and with `--workers` how many subscriber connections each worker holds.

    python bench/propagation.py --subscribers 1000 --writes 20
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _c_subscribers
from _common import cpu_seconds, fresh_schema, parser, percentile, rss_mb, table, write_result
from _stack import ADMIN, BRIDGE, Proc, start

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import config_service_pb2_grpc as cs_grpc
from aibridge.config.v1 import token_admin_service_pb2 as ta
from aibridge.config.v1 import token_admin_service_pb2_grpc as ta_grpc
from aibridge.config.v1 import token_pb2


def service_env(
    database_url: str, data_dir: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The benchmarks' config-service environment: `extra`, then the data directory, an
    ephemeral port, the bench tokens, JSON logs at info, one seeded provider."""
    env = {
        **(extra or {}),
        "AIBRIDGE_DATA_DIR": data_dir,
        "AIBRIDGE_GRPC_LISTEN": "127.0.0.1:0",
        "AIBRIDGE_ADMIN_TOKEN": ADMIN,
        "AIBRIDGE_BRIDGE_TOKEN": BRIDGE,
        "AIBRIDGE_LOG_FORMAT": "json",
        # info level for the ready line; the service logs little at info besides publishes.
        "AIBRIDGE_LOG_LEVEL": "info",
        "AIBRIDGE_OPENAI_KEY": "sk-bench-0123456789abcdefghij",
    }
    if database_url:
        env["AIBRIDGE_DATABASE_URL"] = database_url
    return env


def start_service(
    database_url: str, data_dir: str, workers: int, extra: dict[str, str] | None = None
) -> tuple[Proc, str, list[int]]:
    """The service, its target and the pids whose CPU and memory are its own (`extra`: more
    environment for it)."""
    env = service_env(database_url, data_dir, extra)
    if workers > 1:
        env["AIBRIDGE_WORKERS"] = str(workers)
    proc = start(
        "config-service",
        ["config-service"],
        env,
        Path(data_dir) / "logs",
        ready="workers ready" if workers > 1 else "config service ready",
        timeout=60,
    )
    return proc, str(proc.ready["listen"]), [proc.pid, *proc.ready.get("pids", [])]


def take_census(pid: int, written: Path) -> None:
    """Signal the service's census hook (bench/_census) and wait for its file."""
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while not written.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


WATCH_METHOD = "/aibridge.config.v1.ConfigService/WatchProviders"
# Each channel its own TCP connection (grpc-core shares one between channels otherwise).
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _field(data: bytes, start: int, end: int, number: int) -> tuple[int, int]:
    """(start, end) of length-delimited field `number` in data[start:end]; ValueError if absent."""
    at = start
    while at < end:
        key, at = _varint(data, at)
        kind = key & 7
        if kind == 2:
            size, at = _varint(data, at)
            if key >> 3 == number:
                if at + size > end:
                    raise ValueError("truncated field")
                return at, at + size
            at += size
        elif kind == 0:
            _, at = _varint(data, at)
        elif kind == 1:
            at += 8
        elif kind == 5:
            at += 4
        else:
            raise ValueError(f"wire type {kind}")
    raise ValueError(f"field {number} absent")


def snapshot_version(message: bytes) -> str:
    """A WatchProvidersResponse's snapshot.version, read from its bytes without decoding
    the rest; the snapshot field must span the message to its end (a whole message)."""
    start, end = _field(message, 0, len(message), 1)  # snapshot = 1
    if end != len(message):
        raise ValueError("the snapshot is not the whole message")
    v_start, v_end = _field(message, start, end, 1)  # version = 1
    return message[v_start:v_end].decode()


def subscriber_main(
    target: str, count: int, channels: int, ack: bool, queue: Any, stop: Any, lean: bool = False
) -> None:
    """One process: `count` streams over `channels` channels; reports (version, t_ns) per stream.

    With `ack`, each stream reports every snapshot it read (ReportStatus), as a daemon does."""

    async def run() -> None:
        chans = [grpc.aio.insecure_channel(target, CHANNEL_OPTIONS) for _ in range(channels)]
        arrivals: list[list[tuple[int, int]]] = [[] for _ in range(count)]
        failed = 0
        ready = 0
        errors: dict[str, int] = {}
        md = (("authorization", f"Bearer {BRIDGE}"),)

        async def follow(i: int) -> None:
            nonlocal failed, ready
            stub = cs_grpc.ConfigServiceStub(chans[i % channels])
            node_id = f"bench-{os.getpid()}-{i}"
            request = cs.WatchProvidersRequest(node_id=node_id)
            if lean:  # the response's bytes as they arrived; only its version read
                watch = chans[i % channels].unary_stream(
                    WATCH_METHOD,
                    request_serializer=cs.WatchProvidersRequest.SerializeToString,
                    response_deserializer=None,
                )
                call = watch(request, metadata=md)
            else:
                call = stub.WatchProviders(request, metadata=md)
            first = True
            try:
                async for response in call:
                    version = snapshot_version(response) if lean else response.snapshot.version
                    arrivals[i].append((int(version), time.monotonic_ns()))
                    if ack:
                        report = cs.ReportStatusRequest(
                            node_id=node_id, version=version, applied=True
                        )
                        await stub.ReportStatus(report, metadata=md, timeout=60)
                    if first:
                        ready += 1
                        first = False
            except grpc.aio.AioRpcError as exc:
                if first:
                    failed += 1
                    errors[f"{exc.code().name}: {exc.details()}"[:160]] = (
                        errors.get(f"{exc.code().name}: {exc.details()}"[:160], 0) + 1
                    )

        tasks = [asyncio.create_task(follow(i)) for i in range(count)]
        while ready + failed < count:  # noqa: ASYNC110 - counters, not an event
            await asyncio.sleep(0.05)
        queue.put(("ready", ready, failed))
        if errors:
            print(f"subscriber {os.getpid()} refusals: {errors}", file=sys.stderr, flush=True)
        while not stop.is_set():  # noqa: ASYNC110 - a multiprocessing Event: not awaitable
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        queue.put(("arrivals", arrivals, failed))
        for chan in chans:
            await chan.close()

    uvloop.run(run())  # as the daemons run (uvicorn[standard] brings it)


def connections_per_process(pids: list[int], port: int) -> list[int]:
    """Established TCP connections on the service's `port` that each process holds (which
    worker the kernel gave each subscriber connection)."""
    established: set[str] = set()  # socket inodes
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table_path) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    established.add(fields[9])
    counts = []
    for pid in pids:
        held = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    held += link.startswith("socket:[") and link[8:-1] in established
        counts.append(held)
    return counts


def cpus(pids: list[int]) -> list[float]:
    return [cpu_seconds(pid) for pid in pids]


def make_writes(target: str, count: int, pace: float, tag: str) -> list[tuple[int, int, int]]:
    """`count` CreateToken writes one after another; (version, t_send_ns, t_ack_ns) each."""
    writes: list[tuple[int, int, int]] = []
    with grpc.insecure_channel(target) as channel:
        tokens = ta_grpc.TokenAdminServiceStub(channel)
        snap = cs_grpc.ConfigServiceStub(channel)
        md = (("authorization", f"Bearer {ADMIN}"),)
        for i in range(count):
            t_send = time.monotonic_ns()
            tokens.CreateToken(
                ta.CreateTokenRequest(
                    principal_name=f"bench-{tag}-{i}", role=token_pb2.ROLE_MEMBER
                ),
                metadata=md,
                timeout=30,
            )
            t_ack = time.monotonic_ns()
            version = int(
                snap.GetProviderSnapshot(
                    cs.GetProviderSnapshotRequest(), metadata=md
                ).snapshot.version
            )
            writes.append((version, t_send, t_ack))
            time.sleep(pace)  # let every stream drain before the next
    time.sleep(1.0)
    return writes


def start_profiler(pid: int, path: str, native: bool) -> subprocess.Popen[bytes] | None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("--profile: py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return None
    args = [py_spy, "record", "--pid", str(pid), "--format", "raw", "-o", path, "--rate", "250"]
    if native:
        args.append("--native")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # attached before the first write
    return proc


def stop_profiler(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    proc.send_signal(signal.SIGINT)  # py-spy writes the file and exits
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument(
        "--channels", type=int, default=0, help="total gRPC channels (default N/100, ≥1)"
    )
    p.add_argument(
        "--processes", type=int, default=0, help="subscriber processes (default 1, 2 from 2000)"
    )
    p.add_argument("--writes", type=int, default=20)
    p.add_argument("--database-url", default="")
    p.add_argument("--workers", type=int, default=1, help="config-service worker processes")
    p.add_argument("--ack", action="store_true", help="subscribers report every snapshot")
    p.add_argument("--lean", action="store_true", help="subscribers read only the version")
    p.add_argument(
        "--c-subscribers",
        action="store_true",
        help="subscribers in C (bench/_subscribers.c, libnghttp2; one process by default)",
    )
    p.add_argument("--profile", default="", help="py-spy collapsed stacks of the fan-out here")
    p.add_argument("--native", action="store_true", help="with --profile: C frames too")
    p.add_argument("--service-env", action="append", default=[], help="NAME=VALUE for the service")
    p.add_argument(
        "--attribute",
        action="store_true",
        help="one process: the service's Python objects per stream (tracemalloc, types)",
    )
    p.add_argument(
        "--untraced",
        action="store_true",
        help="with --attribute: no tracemalloc (heap layers and types only, RSS as untraced)",
    )
    args = p.parse_args()
    service_env = dict(e.partition("=")[::2] for e in args.service_env)
    n = args.subscribers
    channels = args.channels or max(1, n // 100)
    if args.c_subscribers and args.ack:
        p.error("--c-subscribers do not report (--ack): the Python subscribers do")
    procs_n = args.processes or (2 if n >= 2000 and not args.c_subscribers else 1)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        # PostgreSQL: a fresh schema each run (dropped after), so runs compare alike.
        url = stack.enter_context(fresh_schema(args.database_url)) if args.database_url else ""
        census_out = Path(tmp) / "census.json"
        if args.attribute:  # bench/_census/sitecustomize.py, loaded by the service
            service_env["PYTHONPATH"] = str(Path(__file__).resolve().parent / "_census")
            service_env["BENCH_CENSUS_OUT"] = str(census_out)
            service_env["BENCH_CENSUS_TRACE"] = "0" if args.untraced else "1"
        # Built before the service starts: a missing compiler or library stops the run here.
        c_exe = _c_subscribers.compile_program(Path(tmp)) if args.c_subscribers else None
        service, target, pids = start_service(url, tmp, args.workers, service_env)
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        stop = ctx.Event()
        per = [n // procs_n + (1 if i < n % procs_n else 0) for i in range(procs_n)]
        per_connections = max(1, channels // procs_n)
        workers = [
            ctx.Process(
                target=subscriber_main,
                args=(target, c, per_connections, args.ack, queue, stop, args.lean),
            )
            for c in per
        ]
        c_procs: list[_c_subscribers.Process] = []
        c_outcomes: list[_c_subscribers.Outcome] = []
        try:
            pace = max(0.2, n / 20000)
            # The writes alone (no subscriber): commit, rebuild and idle loops, same pacing.
            cpu_idle0 = cpus(pids)
            alone = make_writes(target, args.writes, pace, "alone")
            cpu_alone = [b - a for a, b in zip(cpu_idle0, cpus(pids), strict=True)]
            rss_idle = sum(rss_mb(pid) for pid in pids)
            if args.attribute:
                take_census(pids[-1], census_out.with_suffix(".idle"))
            started = time.monotonic()
            ready = failed = 0
            if c_exe is not None:
                c_procs = _c_subscribers.start(c_exe, target, BRIDGE, per, per_connections)
                for c_proc in c_procs:
                    r, f = c_proc.ready()
                    ready += r
                    failed += f
                subscriber_pids = [c_proc.pid for c_proc in c_procs]
            else:
                for w in workers:
                    w.start()
                for _ in workers:
                    _, r, f = queue.get(timeout=240)
                    ready += r
                    failed += f
                subscriber_pids = [w.pid for w in workers if w.pid is not None]
            connect_s = time.monotonic() - started
            time.sleep(1.0)
            rss_connected = sum(rss_mb(pid) for pid in pids)
            held = connections_per_process(pids, int(target.rsplit(":", 1)[1]))
            if args.attribute:
                census_out.with_suffix(".count").write_text(str(ready))
                take_census(pids[-1], census_out)
                attribution = json.loads(census_out.read_text())
            profiler = start_profiler(pids[-1], args.profile, args.native) if args.profile else None
            cpu0 = cpus(pids)
            clients0 = sum(cpu_seconds(pid) for pid in subscriber_pids)
            writes = make_writes(target, args.writes, pace, "fanout")
            per_process = [b - a for a, b in zip(cpu0, cpus(pids), strict=True)]
            cpu = sum(per_process)
            clients_cpu = sum(cpu_seconds(pid) for pid in subscriber_pids) - clients0
            stop_profiler(profiler)
            rss = sum(rss_mb(pid) for pid in pids)
            stop.set()
            arrivals: list[list[tuple[int, int]]] = []
            if c_procs:
                c_outcomes = [c_proc.stop() for c_proc in c_procs]
                for outcome in c_outcomes:
                    arrivals += outcome.arrivals
            else:
                for _ in workers:
                    _, a, _ = queue.get(timeout=120)
                    arrivals += a
        finally:
            stop.set()
            for c_proc in c_procs:
                c_proc.close()
            for w in workers:
                if w.pid is None:
                    continue
                w.join(30)
                if w.is_alive():
                    w.kill()
            service.stop()
    from_send: list[float] = []
    from_ack: list[float] = []
    missing = 0
    # Per write, from its sending: its answer, the first and the last stream to hold it.
    phases: dict[str, list[float]] = {"ack": [], "first": [], "last": [], "spread": []}
    for version, t_send, t_ack in writes:
        got: list[int] = []
        for stream in arrivals:
            t = next((t for v, t in stream if v >= version), None)
            if t is None:
                missing += 1
                continue
            got.append(t)
            from_send.append((t - t_send) / 1e6)
            from_ack.append((t - t_ack) / 1e6)
        if got:
            phases["ack"].append((t_ack - t_send) / 1e6)
            phases["first"].append((min(got) - t_send) / 1e6)
            phases["last"].append((max(got) - t_send) / 1e6)
            phases["spread"].append((max(got) - min(got)) / 1e6)
    # What the streams saw: the distinct sequences of versions (one when all saw the same).
    sequences: dict[tuple[int, ...], int] = {}
    for stream in arrivals:
        seen = tuple(v for v, _ in stream)
        sequences[seen] = sequences.get(seen, 0) + 1
    common = max(sequences, key=lambda seq: sequences[seq], default=())
    # The C subscribers' own account: refusals by grpc-status, streams ended later, bad bytes.
    refusals: dict[str, int] = {}
    ended_after_first = bad_messages = connections_lost = 0
    for outcome in c_outcomes:
        bad_messages += outcome.bad_messages
        connections_lost += outcome.connections_lost
        for end in outcome.ended:
            if end.before_first:
                key = f"grpc-status {end.grpc_status}, HTTP/2 error {end.h2_error}"
                refusals[key] = refusals.get(key, 0) + 1
            else:
                ended_after_first += 1
    if refusals:
        print(f"C subscribers: refused {refusals}", file=sys.stderr)
    result = {
        "subscribers": n,
        "subscriber_kind": "c" if args.c_subscribers else "python",
        "channels": channels,
        "processes": procs_n,
        "writes": args.writes,
        "acks": args.ack,
        "lean_subscribers": args.lean,
        "connected": ready,
        "refused": failed,
        "missing_deliveries": missing,
        "versions_seen": {
            "distinct_sequences": len(sequences),
            "streams_with_the_common_one": sequences.get(common, 0),
            "common_sequence": list(common),
        },
        "connect_seconds": round(connect_s, 2),
        "from_send_ms": {
            "p50": percentile(from_send, 50),
            "p99": percentile(from_send, 99),
            "max": max(from_send, default=float("nan")),
        },
        # Medians over the writes: the answer, the first and the last stream, last - first.
        "per_write_median_ms": {k: round(percentile(v, 50), 1) for k, v in phases.items()},
        "per_write_last_ms": [round(v, 1) for v in phases["last"]],  # in the writes' order
        "from_ack_ms": {
            "p50": percentile(from_ack, 50),
            "p99": percentile(from_ack, 99),
            "max": max(from_ack, default=float("nan")),
        },
        "service_rss_mb": round(rss, 1),
        "service_rss_idle_mb": round(rss_idle, 1),
        "memory_per_stream_kb": round((rss_connected - rss_idle) * 1024 / max(1, ready), 1),
        "service_cpu_seconds_during_writes": round(cpu, 3),
        "service_cpu_seconds_writes_alone": round(sum(cpu_alone), 3),
        "cpu_per_stream_per_change_us": round(
            (cpu - sum(cpu_alone)) * 1e6 / max(1, ready * len(writes)), 1
        ),
        "cpu_per_write_alone_ms": round(sum(cpu_alone) * 1e3 / max(1, len(alone)), 2),
        # The subscribers share the machine: their CPU per stream per change, for the budget.
        "subscriber_cpu_per_stream_per_change_us": round(
            clients_cpu * 1e6 / max(1, ready * len(writes)), 1
        ),
        "subscriber_cpu_seconds_during_writes": round(clients_cpu, 3),
        "database": "postgresql" if args.database_url else "sqlite",
        "workers": args.workers,
        # Parent first (it only supervises), then each worker: CPU for the writes with the
        # streams open, minus the same writes alone.
        "cpu_per_process_seconds": [
            round(c - a, 3) for c, a in zip(per_process, cpu_alone, strict=True)
        ],
        # The subscribers' connections each process holds (parent first), after connecting.
        "connections_per_process": held,
    }
    print(
        table(
            [
                "subscribers",
                "refused",
                "missing",
                "p50 ms",
                "p99 ms",
                "max ms",
                "p99 from ack",
                "RSS MB",
                "KB/stream",
                "CPU s",
                "µs/stream/change",
            ],
            [
                [
                    n,
                    failed,
                    missing,
                    result["from_send_ms"]["p50"],
                    result["from_send_ms"]["p99"],
                    result["from_send_ms"]["max"],
                    result["from_ack_ms"]["p99"],
                    rss,
                    result["memory_per_stream_kb"],
                    cpu,
                    result["cpu_per_stream_per_change_us"],
                ]
            ],
        )
    )
    if args.c_subscribers:
        result["c_subscribers"] = {
            "refusals": refusals,
            "ended_after_first_snapshot": ended_after_first,
            "bad_messages": bad_messages,
            "connections_lost": connections_lost,
            "messages": sum(o.messages for o in c_outcomes),
            "bytes": sum(o.bytes_in for o in c_outcomes),
        }
    print(
        "per write (median, ms from the send): ack {ack}, first stream {first}, "
        "last stream {last}, spread {spread}".format(**result["per_write_median_ms"])
    )
    print(
        f"CPU during the writes: service {cpu:.3f} s, subscribers {clients_cpu:.3f} s "
        f"({result['subscriber_cpu_per_stream_per_change_us']} µs/stream/change)"
    )
    if args.attribute:
        result["attribution"] = attribution
        print(f"KB per stream {attribution['kb_per_stream']}")
        for kind, (count, size) in attribution["objects_per_stream"].items():
            print(f"  {count:5.2f} x {kind} ({size} B)")
        print(f"  gc-tracked objects: {attribution['gc_objects_bytes_per_stream']} B per stream")
        for site, size, blocks in attribution.get("sites_bytes_per_stream", []):
            print(f"  {size:6d} B  {blocks:5.2f} blocks  {site}")
    if args.workers > 1:
        print(f"fan-out CPU per process (parent, workers): {result['cpu_per_process_seconds']} s")
        print(f"subscriber connections per process (parent, workers): {held}")
    path = write_result(f"propagation-{n}", result)
    print(f"wrote {path}")
    clean = failed == missing == ended_after_first == bad_messages == 0
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
