"""The config service's instructions per stream per change, under callgrind (issue 17).

`propagation.py` measures the fan-out's CPU time, which on a shared machine swings by
several µs run to run. This runs the same `aibridge config-service` (SQLite, or
--database-url) under `valgrind --tool=callgrind` and counts instructions instead, which
do not depend on the load: callgrind's counters are dumped between phases by a client
request (a signal to a `sitecustomize` the service loads from bench/_callgrind, calling a
small C helper compiled at run time), so each phase is counted apart in one run:

- `alone`: W admin writes (CreateToken, then GetProviderSnapshot: the new version) with no
  stream open: commit, rebuild, the write's own calls; made before the streams open and
  again after they closed (the snapshot grows by a token per write: the mean of both);
- `fanout`: the same W writes with N WatchProviders streams open (lean subscribers in
  separate processes, not under valgrind: each reads only the snapshot's version), each
  write waited for until every stream holds its version, so no change coalesces with the
  next and every run does the same work;
- `idle`: a few seconds with nothing happening, without streams and with them: the
  service's background (timers, keepalives) per second, taken out of the phases above by
  their wall time (under valgrind a fan-out takes seconds). Each busy phase ends with
  `--settle` seconds of waiting, so the last writes' completions (which the service
  handles after the subscribers have the bytes) are counted in it, not in the next.

Instructions per stream per change = (fanout - alone - idle corrections) / (N * W).
The service runs with the periodic revision check off (an hour: a safety net, not the
fan-out's work). `--source REV`: the service's code from git revision REV (`git archive`,
first on its PYTHONPATH), for before → after; `--service-env NAME=VALUE`: e.g.
`GRPC_EXPERIMENTS=ph2_server`. `--keep DIR`: keep the callgrind files (one per phase) for
`callgrind_annotate`. `--ack`: every stream reports every snapshot it read (ReportStatus,
as the daemons do) before it counts as holding it, so the fan-out phase holds the ACKs
too. `--syscalls`: no valgrind; `strace -c` on every thread of the service during the
fan-out phase: its system calls per stream per change, by name.

    python bench/fanout_instructions.py --subscribers 1000 --changes 10 [--source REV]

Needs valgrind (callgrind.h) and a C compiler. Under callgrind the service runs ≈50 times
slower: ≈3 min at 1,000 streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import re
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
from _common import (
    callgrind_dump_library,
    export_tree,
    fresh_schema,
    parser,
    table,
    write_result,
)
from _stack import ADMIN, AIBRIDGE, BRIDGE, Proc, clean_env
from propagation import CHANNEL_OPTIONS, WATCH_METHOD, service_env, snapshot_version

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import config_service_pb2_grpc as cs_grpc
from aibridge.config.v1 import token_admin_service_pb2 as ta
from aibridge.config.v1 import token_admin_service_pb2_grpc as ta_grpc
from aibridge.config.v1 import token_pb2

FLOOR_CHANGE = "/bench.Floor/Change"
HOOK = Path(__file__).resolve().parent / "_callgrind"


class Service:
    """`aibridge config-service` under callgrind, its counters dumped phase by phase."""

    def __init__(
        self,
        tmp: Path,
        database_url: str,
        tree: Path | None,
        extra: dict[str, str],
        calls: bool = False,
        plain: bool = False,
        floor: int = 0,
    ):
        self._tmp = tmp
        self._label = tmp / "label"
        self.out = tmp / "cg"
        self.out.mkdir()
        path = [str(HOOK)] if tree is None else [str(tree), str(HOOK)]
        env = service_env(
            database_url,
            str(tmp / "data"),
            {
                **extra,
                "PYTHONPATH": os.pathsep.join(path),
                "BENCH_CG_HELPER": str(callgrind_dump_library(tmp)),
                "BENCH_CG_LABEL": str(self._label),
                "AIBRIDGE_RESYNC_INTERVAL": "1h",
            },
        )
        valgrind = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={self.out / 'callgrind.out'}",
            "--dump-instr=no",
            "--dump-line=no",
            f"--log-file={tmp / 'valgrind.log'}",
        ]
        if calls:
            env["BENCH_CG_CALLS"] = "1"
        served = (
            [str(HOOK / "floor_server.py"), str(floor)] if floor else [AIBRIDGE, "config-service"]
        )
        command = [*([] if calls or plain else valgrind), sys.executable, *served]
        log_path = tmp / "service.log"
        log = open(log_path, "w")  # noqa: SIM115 - closed by Proc.stop
        popen = subprocess.Popen(
            command,
            env=clean_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
        self.proc = Proc("config-service", popen, log_path, log, time.monotonic(), {})
        try:
            self.proc.ready = self.proc.wait_for_log("config service ready", 600)
        except AssertionError:
            self.proc.kill()
            self.proc.stop()
            raise
        self.target = f"127.0.0.1:{self.proc.port}"
        self.dumps: list[str] = []

    def dump(self, label: str) -> None:
        """Dump (and zero) the counters under `label`; return once the dump is written."""
        done = self._label.with_suffix(".done")
        done.unlink(missing_ok=True)
        self._label.write_text(label)
        os.kill(self.proc.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 300
        while not (done.exists() and done.read_text() == label):
            if time.monotonic() > deadline or self.proc.popen.poll() is not None:
                raise SystemExit(f"no callgrind dump {label!r}:\n{self.proc.tail(50)}")
            time.sleep(0.05)
        self.dumps.append(label)

    def counts(self) -> dict[str, int]:
        """Instructions (Ir) per dumped phase."""
        found: dict[str, int] = {}
        for path in self.out.iterdir():
            text = path.read_text(errors="replace")
            trigger = re.search(r"^desc: Trigger: Client Request: (.*)$", text, re.M)
            total = re.search(r"^(?:totals|summary): (\d+)", text, re.M)
            if trigger and total:
                found[trigger.group(1).strip()] = int(total.group(1))
        return found

    def calls(self, label: str) -> dict[str, int]:
        """With `calls`: the Python-level calls counted in phase `label`."""
        counts: dict[str, int] = json.loads(Path(f"{self._label}.{label}.calls.json").read_text())
        return counts

    def stop(self) -> None:
        self.proc.stop()


def subscriber_main(
    target: str,
    count: int,
    channels: int,
    index: int,
    queue: Any,
    goal: Any,
    stop: Any,
    ack: bool = False,
) -> None:
    """`count` lean streams over `channels` channels; reports ("reached", index, version)
    once every stream holds the version in `goal`, and its message count at the end.
    With `ack`, each stream reports every snapshot (ReportStatus) before it holds it."""

    async def run() -> None:
        chans = [grpc.aio.insecure_channel(target, CHANNEL_OPTIONS) for _ in range(channels)]
        latest = [0] * count
        messages = size = 0
        ready = failed = 0
        md = (("authorization", f"Bearer {BRIDGE}"),)

        async def follow(i: int) -> None:
            nonlocal ready, failed, messages, size
            watch = chans[i % channels].unary_stream(
                WATCH_METHOD,
                request_serializer=cs.WatchProvidersRequest.SerializeToString,
                response_deserializer=None,
            )
            node_id = f"cg-{index}-{i}"
            call = watch(cs.WatchProvidersRequest(node_id=node_id), metadata=md)
            report = cs_grpc.ConfigServiceStub(chans[i % channels]).ReportStatus
            try:
                async for response in call:
                    version = snapshot_version(response)
                    if ack:
                        status = cs.ReportStatusRequest(
                            node_id=node_id, version=version, applied=True
                        )
                        await report(status, metadata=md, timeout=600)
                    latest[i] = int(version)
                    messages += 1
                    size = len(response)
                    if not seen[i]:
                        seen[i] = True
                        ready += 1
            except grpc.aio.AioRpcError:
                if not seen[i]:
                    failed += 1

        seen = [False] * count
        tasks = [asyncio.create_task(follow(i)) for i in range(count)]
        while ready + failed < count:  # noqa: ASYNC110 - counters, not an event
            await asyncio.sleep(0.05)
        queue.put(("ready", index, ready, failed))
        reached = 0
        while not stop.is_set():
            wanted = goal.value
            if wanted > reached and min(latest) >= wanted:
                reached = wanted
                queue.put(("reached", index, wanted))
            await asyncio.sleep(0.005)
        for task in tasks:
            task.cancel()
        queue.put(("messages", index, messages, size))
        for chan in chans:
            await chan.close()

    uvloop.run(run())


def write(channel: grpc.Channel, tag: str, floor: bool = False) -> int:
    """One CreateToken (a change to every scope's snapshot); the version it made. On the
    floor server: its Change call."""
    if floor:
        change = channel.unary_unary(FLOOR_CHANGE)
        answer = cs.GetProviderSnapshotResponse.FromString(change(b"", timeout=300))
        return int(answer.snapshot.version)
    md = (("authorization", f"Bearer {ADMIN}"),)
    ta_grpc.TokenAdminServiceStub(channel).CreateToken(
        ta.CreateTokenRequest(principal_name=tag, role=token_pb2.ROLE_MEMBER),
        metadata=md,
        timeout=300,
    )
    snapshot = cs_grpc.ConfigServiceStub(channel).GetProviderSnapshot(
        cs.GetProviderSnapshotRequest(), metadata=md, timeout=300
    )
    return int(snapshot.snapshot.version)


def strace(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """`strace -c` attached to every thread of `pid` (and any it starts) until stopped."""
    threads = ",".join(os.listdir(f"/proc/{pid}/task"))
    tracer = subprocess.Popen(
        ["strace", "-f", "-c", "-o", str(out), "-p", threads],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # attached before the first write
    return tracer


def stop_strace(tracer: subprocess.Popen[bytes], out: Path) -> dict[str, int]:
    """Stop `tracer`; the system calls it counted, by name."""
    tracer.send_signal(signal.SIGINT)
    tracer.wait(60)
    counts: dict[str, int] = {}
    for line in out.read_text().splitlines():
        fields = line.split()
        # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(fields) >= 5 and fields[3].isdigit() and fields[-1] != "total":
            counts[fields[-1]] = int(fields[3])
    return counts


def print_syscalls(counts: dict[str, int], per: int) -> int:
    """The fan-out phase's system calls per stream per change (strace attached only then:
    the writes' own calls are in it, a few per change)."""
    total = sum(counts.values())
    print(f"system calls per stream per change: {total / per:.3f}")
    for name, count in sorted(counts.items(), key=lambda kv: -kv[1])[:12]:
        print(f"{count / per:8.3f}  {name}")
    return 0


def print_calls(service: Service, per: int, top: int) -> int:
    """The Python-level calls of the fan-out per stream per change: calls in `fanout`
    minus the mean of the `alone` phases, over streams x changes."""
    fanout, alone1, alone2 = (service.calls(k) for k in ("fanout", "alone1", "alone2"))
    rows = sorted(
        ((n - (alone1.get(k, 0) + alone2.get(k, 0)) / 2) / per, k) for k, n in fanout.items()
    )
    total = sum(c for c, _ in rows)
    print(f"Python-level calls per stream per change: {total:.1f}")
    for count, key in reversed(rows[-top:]):
        print(f"{count:8.3f}  {key}")
    return 0


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--channels", type=int, default=0, help="total channels (default N/100, ≥1)")
    p.add_argument("--processes", type=int, default=1, help="subscriber processes")
    p.add_argument("--changes", type=int, default=10)
    p.add_argument("--idle", type=float, default=5.0, help="seconds of each idle phase")
    p.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help="seconds each busy phase waits at its end (the last writes' completions)",
    )
    p.add_argument("--database-url", default="")
    p.add_argument("--source", default="", help="git revision of the service's code")
    p.add_argument("--service-env", action="append", default=[], help="NAME=VALUE")
    p.add_argument("--keep", default="", help="keep the callgrind files in this directory")
    p.add_argument("--label", default="", help="a name for this run in the result file")
    p.add_argument(
        "--floor",
        type=int,
        default=0,
        metavar="BYTES",
        help="the bare grpc.aio floor (bench/_callgrind/floor_server.py) instead of the "
        "service, writing messages of BYTES",
    )
    p.add_argument("--ack", action="store_true", help="every stream reports every snapshot")
    p.add_argument(
        "--syscalls",
        action="store_true",
        help="no valgrind: the service's system calls in the fan-out (strace -c, every thread)",
    )
    p.add_argument(
        "--calls",
        type=int,
        default=0,
        metavar="TOP",
        help="no valgrind: count Python-level calls per phase; print the TOP per stream per change",
    )
    args = p.parse_args()
    if args.floor and args.ack:
        raise SystemExit("--ack is the service's ReportStatus: not with --floor")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    n, w = args.subscribers, args.changes
    channels = args.channels or max(1, n // 100)
    extra = dict(e.partition("=")[::2] for e in args.service_env)
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        url = stack.enter_context(fresh_schema(args.database_url)) if args.database_url else ""
        tree = export_tree(args.source, tmp / "tree") if args.source else None
        service = Service(
            tmp,
            url,
            tree,
            extra,
            calls=bool(args.calls),
            plain=args.syscalls,
            floor=args.floor,
        )
        floor = bool(args.floor)
        stack.callback(service.stop)
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        goal = ctx.Value("q", 0)
        stop = ctx.Event()
        per = [n // args.processes + (i < n % args.processes) for i in range(args.processes)]
        subscribers = [
            ctx.Process(
                target=subscriber_main,
                args=(
                    service.target,
                    c,
                    max(1, channels // args.processes),
                    i,
                    queue,
                    goal,
                    stop,
                    args.ack,
                ),
            )
            for i, c in enumerate(per)
        ]

        def timed(label: str, started: float) -> None:
            seconds[label] = time.monotonic() - started
            service.dump(label)

        with grpc.insecure_channel(service.target) as channel:
            for i in range(3):  # warm-up: first calls, caches
                write(channel, f"warm-{i}", floor)
            service.dump("warm")
            started = time.monotonic()
            for i in range(w):
                write(channel, f"alone1-{i}", floor)
            time.sleep(args.settle)
            timed("alone1", started)
            started = time.monotonic()
            time.sleep(args.idle)
            timed("idle0", started)
            started = time.monotonic()
            for s in subscribers:
                s.start()
            ready = failed = 0
            for _ in subscribers:
                _, _, r, f = queue.get(timeout=1200)
                ready, failed = ready + r, failed + f
            time.sleep(args.settle)
            timed("connect", started)
            if failed:
                stop.set()
                raise SystemExit(f"{failed} of {n} streams refused")
            tracer = strace(service.proc.pid, tmp / "strace.txt") if args.syscalls else None
            started = time.monotonic()
            for i in range(w):
                version = write(channel, f"fanout-{i}", floor)
                goal.value = version
                for _ in subscribers:
                    kind, *_ = queue.get(timeout=1200)
                    assert kind == "reached"
            time.sleep(args.settle)
            timed("fanout", started)
            if tracer is not None:
                syscalls = stop_strace(tracer, tmp / "strace.txt")
            started = time.monotonic()
            time.sleep(args.idle)
            timed("idle1", started)
            started = time.monotonic()
            stop.set()
            messages = size = 0
            for _ in subscribers:
                kind, _, count, size = queue.get(timeout=300)
                messages += count
            for s in subscribers:
                s.join(60)
            time.sleep(2.0)  # the service sees every stream end
            timed("disconnect", started)
            started = time.monotonic()
            for i in range(w):
                write(channel, f"alone2-{i}", floor)
            time.sleep(args.settle)
            timed("alone2", started)
        if args.calls:
            return print_calls(service, ready * w, args.calls)
        if args.syscalls:
            return print_syscalls(syscalls, ready * w)
        counts = service.counts()
        if args.keep:
            keep = Path(args.keep)
            keep.mkdir(parents=True, exist_ok=True)
            for path in service.out.iterdir():
                shutil.copy(path, keep / path.name)
    missing = set(service.dumps) - set(counts)
    if missing:
        raise SystemExit(f"callgrind dumps not found: {sorted(missing)}")
    rate0 = counts["idle0"] / seconds["idle0"]
    rate1 = counts["idle1"] / seconds["idle1"]
    alone = (counts["alone1"] + counts["alone2"]) / 2
    alone_s = (seconds["alone1"] + seconds["alone2"]) / 2
    raw = (counts["fanout"] - alone) / (n * w)
    corrected = (counts["fanout"] - rate1 * seconds["fanout"] - (alone - rate0 * alone_s)) / (n * w)
    result = {
        "label": args.label,
        "source": "floor" if args.floor else (args.source or "worktree"),
        "service_env": extra,
        "acks": args.ack,
        "subscribers": ready,
        "changes": w,
        "channels": channels,
        "messages": messages,
        "message_bytes": size,
        "instructions": counts,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "idle_instructions_per_second": {"no_streams": round(rate0), "streams": round(rate1)},
        "instructions_per_write_alone": round(alone / w),
        "instructions_per_stream_per_change": round(corrected),
        "instructions_per_stream_per_change_uncorrected": round(raw),
        "instructions_per_stream_connect": round(counts["connect"] / n),
    }
    print(
        table(
            [
                "streams",
                "changes",
                "Ir/write alone",
                "Ir/stream/change",
                "uncorrected",
                "idle Ir/s (0, N)",
                "fanout s",
                "Ir/stream connect",
                "message B",
            ],
            [
                [
                    ready,
                    w,
                    result["instructions_per_write_alone"],
                    result["instructions_per_stream_per_change"],
                    round(raw),
                    f"{rate0:.0f}, {rate1:.0f}",
                    round(seconds["fanout"], 1),
                    result["instructions_per_stream_connect"],
                    size,
                ]
            ],
        )
    )
    if messages != n * (w + 1):
        print(f"note: {messages} messages, {n * (w + 1)} expected (one per stream per version)")
    name = "floor" if args.floor else "service"
    print(f"wrote {write_result(f'fanout-instructions-{name}-{n}', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
