"""Recording's instructions per request in the whole `aibridge bridge` process, the record
shipper included (DESIGN §10: recording's cost -<= 3 %).

Starts the bench stack (fake upstream, config service, gateway token), then `aibridge
bridge` under `valgrind --tool=callgrind --trace-children=no` twice, in turn: recording
off (`AIBRIDGE_RECORDING=false`) and on (shipping every record to the stack's config
service, as deployed). For each: --warmup requests, counters zeroed (`callgrind_control
--zero`), --requests sequential requests from this process (outside valgrind), a wait
past the flush interval so the shipper ships all of them, then the counters dumped:
instructions per request = Ir / requests. The flush interval (--flush, default 20 s) is
long enough that the measured requests make one batch: under valgrind a request takes
~50 x longer, so a deployed bridge's 1 s interval would cut batches ~50 x smaller than
at the rates they are meant for (thousands of records per batch at 1,000+ req/s), and
the per-call cost of shipping would count ~50 x too much. Recording's cost = on - off;
its share = that over on. Instruction counts hold steady on a loaded machine, where CPU
time does not. Both runs have one PYTHONHASHSEED (`--hash-seed`, default 0), so their
dicts and sets are laid out alike.

The counted window also holds the process's idle background (event-loop timers, gRPC
pollers: ~250 k instructions a second), and valgrind's pace, which the machine's load
sets, decides how many seconds of it: ±2-3 k per request between runs, and more for the
slower of the two runs. So after the dump each run counts --idle seconds (default 10) of
idle, and the rows "without the idle background" subtract that rate times the seconds
counted: what the requests themselves cost. (Recording's own idle rate, a second gRPC
channel, is in the idle row: a few instructions per request at a deployed bridge's rates.)

`--cache-sim`: callgrind simulates the caches too (`--cache-sim=yes`, the host's first
level and last level as valgrind detects them): the data reads and writes and their
misses at the first level (D1) and the last (LL) per request, beside the instructions;
what a cold record costs in cycles that instruction counts do not show. `--source REV`:
a third run, recording on, of the bridge from git revision REV (`git archive`, first on
its PYTHONPATH): before → after in one run. `--ll SIZE,ASSOC,LINE`: the last level
simulated with that geometry (valgrind's `--LL`; e.g. `524288,8,64`, a core's L2 on the
EPYC of bench/README.md, where the host's L3 of 32 MiB holds every record waiting).

    python bench/bridge_instructions.py [--requests 1000] [--warmup 200] [--flush 20]
        [--stream] [--hash-seed 0] [--cache-sim [--ll SIZE,ASSOC,LINE]] [--source REV]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import export_tree, table, write_result
from _stack import AIBRIDGE, Conn, Proc, bridge_env, clean_env, free_port, stack, wait_ready
from bridge_overhead import bridge_target


async def _send(port: int, raw: bytes, n: int) -> None:
    conn = Conn("127.0.0.1", port)
    try:
        for _ in range(n):
            if (await conn.request(raw)).status != 200:
                raise SystemExit("a request through the bridge failed")
    finally:
        conn.close()


def _callgrind_control(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True)


def _dumped(out: Path) -> dict[str, int]:
    """Each event's total in the newest dump of `out` (callgrind names dumps `<out>.<n>`):
    Ir; with --cache-sim also Dr, Dw, I1mr, D1mr, D1mw, ILmr, DLmr, DLmw."""
    dumps = sorted(out.parent.glob(out.name + ".*"), key=lambda p: p.stat().st_mtime)
    events: list[str] = []
    for line in dumps[-1].read_text().splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        if line.startswith(("summary:", "totals:")):
            return dict(zip(events, map(int, line.split()[1:]), strict=False))
    raise SystemExit(f"no totals in {dumps[-1]}")


def measure(
    args: argparse.Namespace,
    recording: bool,
    s: object,
    tmp: Path,
    tree: Path | None = None,
    events: dict[str, dict[str, float]] | None = None,
) -> tuple[float, float, float]:
    """(Ir per request, the idle Ir per second after, the seconds counted); every event
    per request in `events[name]` (with --cache-sim: data accesses and misses)."""
    port = free_port()
    name = ("on" if recording else "off") + ("-source" if tree is not None else "")
    env = bridge_env(s.target, port, tmp / f"bridge-{name}")  # type: ignore[attr-defined]
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    env["AIBRIDGE_RECORDING_FLUSH_INTERVAL"] = f"{args.flush}s"
    if args.hash_seed != "random":  # one seed for both runs: dict and set layouts alike
        env["PYTHONHASHSEED"] = args.hash_seed
    if not recording:
        env["AIBRIDGE_RECORDING"] = "false"
    out = tmp / f"callgrind-{name}.out"
    log_path = tmp / f"bridge-{name}.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed by Proc.stop
    popen = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--trace-children=no",
            *(["--cache-sim=yes"] if args.cache_sim else []),
            *([f"--LL={args.ll}"] if args.ll else []),
            f"--callgrind-out-file={out}",
            sys.executable,
            AIBRIDGE,
            "bridge",
        ],
        env=clean_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )
    proc = Proc(f"bridge-{name}", popen, log_path, log, time.monotonic(), {})
    try:
        proc.wait_for_log("bridge listening", 600)
        wait_ready(port, 600)
        raw = bridge_target(name, port, s.token).raw["sse" if args.stream else "json"]  # type: ignore[attr-defined]
        asyncio.run(_send(port, raw, args.warmup))
        time.sleep(args.flush + 5)  # the warm-up's records shipped
        _callgrind_control("--zero", popen.pid)
        t0 = time.monotonic()
        asyncio.run(_send(port, raw, args.requests))
        time.sleep(args.flush + 5)
        _callgrind_control("--dump", popen.pid)
        elapsed = time.monotonic() - t0
        totals = _dumped(out)
        counted = totals["Ir"]
        if events is not None:
            events[name] = {k: v / args.requests for k, v in totals.items()}
        # The idle background (timers, pollers): its Ir per second, to subtract.
        _callgrind_control("--zero", popen.pid)
        t1 = time.monotonic()
        time.sleep(args.idle)
        _callgrind_control("--dump", popen.pid)
        idle = _dumped(out)["Ir"] / (time.monotonic() - t1)
        return counted / args.requests, idle, elapsed
    finally:
        proc.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--stream", action="store_true", help="SSE (20 chunks) instead of JSON")
    p.add_argument("--flush", type=float, default=20.0, help="recording flush interval (s)")
    p.add_argument(
        "--idle", type=float, default=10.0, help="seconds of idle counted after (background)"
    )
    p.add_argument(
        "--hash-seed", default="0", help="the bridge's PYTHONHASHSEED ('random': its own each run)"
    )
    p.add_argument(
        "--cache-sim", action="store_true", help="also simulate the caches (data misses)"
    )
    p.add_argument("--ll", default="", help="with --cache-sim: the last level, SIZE,ASSOC,LINE")
    p.add_argument("--source", default="", help="a third run, recording on, from git REV")
    args = p.parse_args()
    events: dict[str, dict[str, float]] = {}
    source: tuple[float, float, float] | None = None
    with stack(prefix="aibridge-bench-instr-") as s:
        off, off_idle, off_seconds = measure(args, False, s, s.tmp, events=events)
        if args.source:
            tree = export_tree(args.source, s.tmp / "source-tree")
            source = measure(args, True, s, s.tmp, tree, events)
        on, on_idle, on_seconds = measure(args, True, s, s.tmp, events=events)
    cost = on - off
    # Without each run's idle background (its idle Ir/s x the seconds counted): what the
    # requests themselves cost, whatever valgrind's pace on a loaded machine.
    off_work = off - off_idle * off_seconds / args.requests
    on_work = on - on_idle * on_seconds / args.requests
    work = on_work - off_work
    rows = [
        ["bridge instructions per request, recording off", round(off)],
        ["bridge instructions per request, recording on (shipping)", round(on)],
        ["recording's instructions per request", round(cost)],
        ["recording's share of the bridge's instructions (%)", round(100 * cost / on, 2)],
        ["idle instructions per second, off / on", f"{off_idle:.0f} / {on_idle:.0f}"],
        ["seconds counted, off / on", f"{off_seconds:.1f} / {on_seconds:.1f}"],
        ["per request without the idle background, off", round(off_work)],
        ["per request without the idle background, on", round(on_work)],
        ["recording's instructions per request, idle background subtracted", round(work)],
        ["  its share (%)", round(100 * work / on_work, 2)],
    ]
    if source is not None:
        src, src_idle, src_seconds = source
        src_work = src - src_idle * src_seconds / args.requests
        rows += [
            [f"bridge instructions per request, recording on, {args.source}", round(src)],
            [
                f"  recording's, {args.source} (share %)",
                f"{src - off:.0f} ({100 * (src - off) / src:.2f})",
            ],
            [
                f"  idle background subtracted, {args.source} (share %)",
                f"{src_work - off_work:.0f} ({100 * (src_work - off_work) / src_work:.2f})",
            ],
        ]
    print(table(["figure", "value"], rows))
    if args.cache_sim:
        names = list(events)
        kinds = [k for k in next(iter(events.values())) if k != "Ir"]
        print(
            table(
                ["per request", *names],
                [[k, *(round(events[n].get(k, 0.0), 1) for n in names)] for k in kinds],
            )
        )
    path = write_result(
        "bridge_instructions",
        {
            "requests": args.requests,
            "flush": args.flush,
            "stream": args.stream,
            "hash_seed": args.hash_seed,
            "off": off,
            "on": on,
            "idle_per_second": {"off": off_idle, "on": on_idle},
            "seconds": {"off": off_seconds, "on": on_seconds},
            "work": {"off": off_work, "on": on_work},
            "source": args.source,
            "source_run": source,
            "events_per_request": events,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
