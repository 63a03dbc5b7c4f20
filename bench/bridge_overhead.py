"""Bridge overhead: the same client calls a fake upstream directly and through the bridge.

Starts a fast fake OpenAI upstream (its own process: raw asyncio + httptools, JSON
chat completions and an SSE stream of 20 chunks), one `aibridge config-service`
(SQLite, the upstream seeded as provider `fake` through AIBRIDGE_PROVIDER_0_*) and one
`aibridge bridge` (log level info, as deployed). This process is the one load
generator (a lean keep-alive HTTP/1.1 client on uvloop). Phases:

1. warm-up through the bridge; bridge RSS "before";
2. latency: sequential requests, direct and bridge interleaved (order alternating each
   round), non-streaming and SSE; added latency = bridge percentile - direct percentile,
   added TTFB (SSE: time to the first body byte) likewise;
3. saturation: `--concurrency` connections hammering the bridge (non-streaming, then a
   shorter SSE run), and the direct upstream for reference; bridge RSS sampled every
   second, CPU seconds of each process recorded;
4. bridge RSS "after" (`--requests` bridge requests in all, default 100,000).

With `--record`, two bridges run from bench/_recording_bridge.py (`aibridge bridge` with a
record sink that serializes and counts the records; shipping is not part of it), one with
recording off (no sink), one on. Both take part in every phase: in the latency rounds the
order of the targets rotates, and at saturation the two bridges take turns in slices, so
both see the same machine. Recording's cost = recording bridge - plain bridge (DESIGN §10 /
§11: p50 +<= 0.05 ms, throughput -<= 3 %). Both bridges run with one PYTHONHASHSEED
(`--hash-seed`, default 0: a hash seed of its own per process is a bias of its own, in
dict and set layouts), and the saturation turns are `--slices` (default 12) per kind,
alternating which bridge goes first; besides the loss over all slices, the per-slice
losses are reported as median and range (min-max), so noise can be told from cost.
With `--record --ship`, the recording bridge is `aibridge bridge` as deployed instead:
records built and shipped to the config service (data_plane/recording), the whole cost of
recording.

DESIGN §10 bars: added p50 ≤ 1 ms, p99 ≤ 3 ms, added SSE TTFB ≤ 1 ms, ≥ 1,000 req/s
per bridge process, RSS ≤ 150 MB and flat across 100,000 requests. On a shared 2-core
machine the bridge, the upstream and this client compete for CPU: read the ratios and
differences of one run, and "req/s per bridge CPU-second" for what one core can do.

`--pin`: the bridges on the last CPU, this client, the upstream and the config service on
the others (the side-by-side of issue 17: a gateway's throughput is its own core's; with
`--ship` the config service ingesting the records would otherwise take from the bridge's
core what in production another machine spends).

`--baseline REV` (with `--record`): a third bridge, recording on as the recording bridge
is, running the code of git revision REV (`git archive`, first on its PYTHONPATH), in
every phase (latency rounds and saturation slices rotate over the three): recording's
loss before (REV) and after (this tree) measured in one run, and the recording bridge's
requests per CPU-second over the baseline's.

    python bench/bridge_overhead.py [--requests 100000] [--record [--ship]] [--pin]
        [--baseline REV]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_seconds, export_tree, parser, percentile, publish, rss_mb
from _stack import (
    PROVIDER,
    SSE_CHUNKS,
    UPSTREAM_KEY,
    Conn,
    Proc,
    bridge_env,
    free_port,
    request_bytes,
    serve_bridge,
    stack,
    start,
    start_script,
)

BARS = {
    "added_p50_ms": 1.0,
    "added_p99_ms": 3.0,
    "added_ttfb_ms": 1.0,
    "rps": 1000.0,
    "rss_mb": 150.0,
    "recording_added_p50_ms": 0.05,
    "recording_throughput_loss_pct": 3.0,
}
SLICES = 12  # saturation turns each bridge takes with --record (--slices)
HASH_SEED = "0"  # both bridges' PYTHONHASHSEED with --record (--hash-seed)


def _body(stream: bool) -> bytes:
    doc: dict[str, Any] = {
        "model": "gpt-bench",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
            {
                "role": "user",
                "content": "Write one sentence about the benchmark of an AI gateway. " * 4,
            },
        ],
        "max_tokens": 256,
        "temperature": 0.2,
        "stream": stream,
    }
    if stream:
        doc["stream_options"] = {"include_usage": True}
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass
class Target:
    name: str
    port: int
    raw: dict[str, bytes]  # kind ("json" | "sse") -> request bytes


def target(name: str, port: int, path: str, host: str, auth: dict[str, str]) -> Target:
    """`name` on `port`: a chat completion to `path` (JSON and SSE) with the `auth` headers."""
    headers = {"content-type": "application/json", "accept": "application/json", **auth}
    return Target(
        name,
        port,
        {k: request_bytes("POST", path, host, headers, _body(k == "sse")) for k in ("json", "sse")},
    )


def direct_target(up_port: int) -> Target:
    """The fake upstream itself, with the upstream key."""
    auth = {"authorization": f"Bearer {UPSTREAM_KEY}"}
    return target("direct", up_port, "/v1/chat/completions", f"127.0.0.1:{up_port}", auth)


def bridge_target(name: str, port: int, token: str) -> Target:
    """A bridge on `port`, provider `fake`, with the gateway `token`."""
    path, auth = f"/{PROVIDER}/v1/chat/completions", {"authorization": f"Bearer {token}"}
    return target(name, port, path, f"127.0.0.1:{port}", auth)


@dataclass
class Samples:
    total: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)


def _ms(seconds: list[float]) -> list[float]:
    return [s * 1000 for s in seconds]


def _check(result_status: int, size: int, kind: str, where: str) -> None:
    if result_status != 200 or size == 0:
        raise RuntimeError(f"{where} {kind}: status {result_status}, {size} body bytes")


async def _sequential(targets: list[Target], rounds: int) -> dict[tuple[str, str], Samples]:
    """`rounds` rounds of (json, sse) x targets, the order rotating each round (so each
    target is as often first, second, ...; with two, alternating)."""
    conns = {t.name: Conn("127.0.0.1", t.port) for t in targets}
    samples = {(t.name, k): Samples() for t in targets for k in ("json", "sse")}
    try:
        for i in range(rounds):
            for kind in ("json", "sse"):
                for t in targets[i % len(targets) :] + targets[: i % len(targets)]:
                    r = await conns[t.name].request(t.raw[kind])
                    _check(r.status, r.size, kind, t.name)
                    s = samples[(t.name, kind)]
                    s.total.append(r.total)
                    s.ttfb.append(r.ttfb)
    finally:
        for c in conns.values():
            c.close()
    return samples


@dataclass
class Saturation:
    requests: int
    seconds: float
    errors: int
    latencies: list[float]
    cpu: dict[str, float]
    rss: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else float("nan")

    def __add__(self, other: Saturation) -> Saturation:
        cpu = {k: self.cpu.get(k, 0.0) + other.cpu.get(k, 0.0) for k in {*self.cpu, *other.cpu}}
        return Saturation(
            self.requests + other.requests,
            self.seconds + other.seconds,
            self.errors + other.errors,
            self.latencies + other.latencies,
            cpu,
            self.rss + other.rss,
        )


async def _saturate(
    target: Target,
    kind: str,
    n: int,
    concurrency: int,
    pids: dict[str, int],
    rss_pid: int | None,
) -> Saturation:
    conns = [Conn("127.0.0.1", target.port) for _ in range(min(concurrency, max(1, n)))]
    raw = target.raw[kind]
    issued = 0
    errors = 0
    latencies: list[float] = []
    rss: list[float] = []

    async def worker(conn: Conn) -> None:
        nonlocal issued, errors
        while issued < n:
            issued += 1
            try:
                r = await conn.request(raw)
            except (ConnectionError, OSError):
                errors += 1
                continue
            if r.status != 200:
                errors += 1
            latencies.append(r.total)

    async def sampler() -> None:
        while rss_pid is not None:
            rss.append(rss_mb(rss_pid))
            await asyncio.sleep(1.0)

    for c in conns:  # connect first: the timed part is requests only
        c.proto = await c._connect()
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    own0 = time.process_time()
    sampling = asyncio.create_task(sampler())
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    seconds = time.perf_counter() - t0
    sampling.cancel()
    cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
    cpu["client"] = time.process_time() - own0
    for c in conns:
        c.close()
    return Saturation(n, seconds, errors, latencies, cpu, rss)


def _plan(total: int, rounds: int | None) -> dict[str, int]:
    """Split the bridge's request budget between the phases."""
    warmup = min(500, max(10, total // 20))
    rounds = rounds if rounds is not None else min(2000, max(5, total // 20))
    left = max(0, total - warmup - 2 * rounds)
    sse = left // 10
    return {"warmup": warmup, "rounds": rounds, "sat_sse": sse, "sat_json": left - sse}


def _pinning(pin: bool) -> set[int]:
    """The CPUs the bridges start on. With --pin: the last one, and this process (so the
    upstream and config service it starts) moved to the others: the gateway on one core,
    its load on the rest, as in issue 17's side-by-side, so the bridge's throughput is its
    own core's, not what the config service ingesting the records (here on the same
    machine, in production on another) takes from it."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin:
        return set(cpus)
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least 2 CPUs")
    os.sched_setaffinity(0, set(cpus[:-1]))
    return {cpus[-1]}


@contextlib.contextmanager
def _started_on(cpus: set[int]) -> Iterator[None]:
    """Processes started inside inherit `cpus`; this process keeps its own."""
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, mine)


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--requests", type=int, default=100_000, help="bridge requests in all")
    p.add_argument("--concurrency", type=int, default=64, help="in-flight at saturation")
    p.add_argument(
        "--rounds", type=int, default=None, help="latency rounds (default min(2000, N/20))"
    )
    p.add_argument("--sse-gap-ms", type=float, default=0.0, help="upstream pause between chunks")
    p.add_argument("--log-level", default="info", help="the bridge's AIBRIDGE_LOG_LEVEL")
    p.add_argument(
        "--record",
        action="store_true",
        help="also run a bridge with interception recording on, and compare",
    )
    p.add_argument(
        "--ship",
        action="store_true",
        help="with --record: the recording bridge ships its records to the config service",
    )
    p.add_argument(
        "--slices", type=int, default=SLICES, help="with --record: saturation turns per bridge"
    )
    p.add_argument(
        "--hash-seed",
        default=HASH_SEED,
        help="with --record: both bridges' PYTHONHASHSEED ('random': each its own)",
    )
    p.add_argument(
        "--pin",
        action="store_true",
        help="the bridges on the last CPU; client, upstream and config service on the others",
    )
    p.add_argument(
        "--baseline",
        default="",
        help="with --record: a third bridge, recording as the recording bridge does, from REV",
    )
    args = p.parse_args()
    if args.baseline and not args.record:
        raise SystemExit("--baseline needs --record")
    plan = _plan(args.requests, args.rounds)
    bridge_cpus = _pinning(args.pin)

    with stack(args.sse_gap_ms) as s:
        tmp = s.tmp
        bridge_port = free_port()
        env = bridge_env(s.target, bridge_port, tmp / "bridge", args.log_level)
        env["AIBRIDGE_RECORDING"] = "false"  # the baseline records nothing
        if args.record and args.hash_seed != "random":
            env["PYTHONHASHSEED"] = args.hash_seed
        helper = Path(__file__).resolve().parent / "_recording_bridge.py"
        # With --record both bridges run from the same script, one with recording off,
        # so the only difference between them is recording.
        with _started_on(bridge_cpus):
            bridge = s.add(
                start_script("bridge", helper, env, tmp, ("--off",))
                if args.record
                else start("bridge", ["bridge"], env, tmp)
            )
        serve_bridge(bridge, bridge_port)

        def recording_bridge(
            name: str, script: Path, pythonpath: Path | None = None
        ) -> tuple[int, Proc]:
            """A bridge with recording on (`aibridge bridge` with --ship, else `script`'s
            counting sink), pinned like the baseline; with `pythonpath`, that tree's code."""
            port = free_port()
            env = bridge_env(s.target, port, tmp / name, args.log_level)
            if pythonpath is not None:
                env["PYTHONPATH"] = os.pathsep.join(
                    [str(pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])]
                )
            if args.hash_seed != "random":
                env["PYTHONHASHSEED"] = args.hash_seed
            with _started_on(bridge_cpus):
                proc = s.add(
                    start(name, ["bridge"], env, tmp)
                    if args.ship
                    else start_script(name, script, env, tmp)
                )
            serve_bridge(proc, port)
            return port, proc

        recording = recording_bridge("recording-bridge", helper) if args.record else None
        baseline = None
        if args.baseline:
            tree = export_tree(args.baseline, tmp / "baseline-tree")
            baseline = recording_bridge("baseline-bridge", tree / "bench" / helper.name, tree)
        result = _run(
            args,
            plan,
            s.up_port,
            (bridge_port, bridge),
            recording,
            s.token,
            s.upstream_pid,
            baseline,
        )
        if recording is not None:
            recording[1].stop()
            sunk = recording[1].events("bench sink")
            result["recording"]["records"] = sunk[0]["records"] if sunk else None
            result["recording"]["record_bytes"] = sunk[0]["bytes"] if sunk else None
    return _report(result)


def _run(
    args: argparse.Namespace,
    plan: dict[str, int],
    up_port: int,
    plain: tuple[int, Proc],
    recording: tuple[int, Proc] | None,
    token: str,
    upstream_pid: int,
    base: tuple[int, Proc] | None = None,
) -> dict[str, Any]:
    import uvloop

    bridge_port, bridge = plain
    direct = direct_target(up_port)
    through = bridge_target("bridge", bridge_port, token)
    pids = {"bridge": bridge.pid, "upstream": upstream_pid}
    recorded = bridge_target("recording", recording[0], token) if recording is not None else None
    rec_pids = {"bridge": recording[1].pid, "upstream": upstream_pid} if recording else {}
    based = bridge_target("baseline", base[0], token) if base is not None else None
    base_pids = {"bridge": base[1].pid, "upstream": upstream_pid} if base else {}
    c = args.concurrency

    slices: dict[str, list[tuple[Saturation, Saturation]]] = {"json": [], "sse": []}
    base_slices: dict[str, list[tuple[Saturation, Saturation]]] = {"json": [], "sse": []}
    base_totals: dict[str, Saturation] = {}

    async def saturate_both(kind: str, n: int) -> tuple[Saturation, Saturation | None]:
        """`n` requests on the plain bridge (and as many on the recording one, the two
        taking turns in --slices slices; each slice's pair kept in `slices`)."""
        if recorded is None:
            return await _saturate(through, kind, n, c, pids, bridge.pid), None
        plain_total = rec_total = None
        count = max(1, min(args.slices, n))
        order = [(through, pids, bridge.pid), (recorded, rec_pids, rec_pids["bridge"])]
        if based is not None:
            order.append((based, base_pids, base_pids["bridge"]))
        for i in range(count):
            part = n // count + (1 if i < n % count else 0)
            results = []
            # Each bridge as often first, second...: with two, alternating.
            for target, its_pids, rss_pid in order[i % len(order) :] + order[: i % len(order)]:
                results.append(
                    (target.name, await _saturate(target, kind, part, c, its_pids, rss_pid))
                )
            got = dict(results)
            slices[kind].append((got["bridge"], got["recording"]))
            plain_total = got["bridge"] if plain_total is None else plain_total + got["bridge"]
            rec_total = got["recording"] if rec_total is None else rec_total + got["recording"]
            if based is not None:
                base_slices[kind].append((got["bridge"], got["baseline"]))
                held = base_totals.get(kind)
                base_totals[kind] = got["baseline"] if held is None else held + got["baseline"]
        assert plain_total is not None
        return plain_total, rec_total

    async def run() -> dict[str, Any]:
        t_start = time.perf_counter()
        warm = await _saturate(through, "json", plan["warmup"], 8, pids, None)
        await _saturate(direct, "json", plan["warmup"], 8, pids, None)
        if warm.errors:
            raise RuntimeError(f"warm-up: {warm.errors} errors; bridge log:\n{bridge.tail()}")
        if recorded is not None:
            await _saturate(recorded, "json", plan["warmup"], 8, rec_pids, None)
        if based is not None:
            await _saturate(based, "json", plan["warmup"], 8, base_pids, None)
        rss_before = rss_mb(bridge.pid)
        seq = await _sequential(
            [direct, through, *([recorded] if recorded else []), *([based] if based else [])],
            plan["rounds"],
        )
        sat_json, rec_json = await saturate_both("json", plan["sat_json"])
        sat_sse, rec_sse = await saturate_both("sse", plan["sat_sse"])
        ref_n = min(20_000, max(plan["sat_json"] // 5, 1))
        ref = await _saturate(direct, "json", ref_n, c, pids, None)
        rss_after = rss_mb(bridge.pid)
        return {
            "seq": seq,
            "sat_json": sat_json,
            "sat_sse": sat_sse,
            "ref": ref,
            "rss_before": rss_before,
            "rss_after": rss_after,
            "rec_json": rec_json,
            "rec_sse": rec_sse,
            "slices": slices,
            "elapsed": time.perf_counter() - t_start,
        }

    raw = uvloop.run(run())
    seq: dict[tuple[str, str], Samples] = raw["seq"]
    sat_json: Saturation = raw["sat_json"]
    sat_sse: Saturation = raw["sat_sse"]
    ref: Saturation = raw["ref"]

    def stats(values: list[float]) -> dict[str, float]:
        ms = _ms(values)
        return {"p50": percentile(ms, 50), "p99": percentile(ms, 99)}

    latency: dict[str, Any] = {}
    for kind in ("json", "sse"):
        d, b = seq[("direct", kind)], seq[("bridge", kind)]
        entry = {
            "direct_ms": stats(d.total),
            "bridge_ms": stats(b.total),
            "direct_ttfb_ms": stats(d.ttfb),
            "bridge_ttfb_ms": stats(b.ttfb),
            "paired_diff_ms": stats([y - x for x, y in zip(d.total, b.total, strict=True)]),
        }
        for q in ("p50", "p99"):
            entry[f"added_{q}_ms"] = entry["bridge_ms"][q] - entry["direct_ms"][q]
            entry[f"added_ttfb_{q}_ms"] = entry["bridge_ttfb_ms"][q] - entry["direct_ttfb_ms"][q]
        latency[kind] = entry
    bridge_requests = plan["warmup"] + 2 * plan["rounds"] + sat_json.requests + sat_sse.requests

    def sat(s: Saturation) -> dict[str, Any]:
        bridge_cpu = s.cpu.get("bridge", 0.0)
        return {
            "requests": s.requests,
            "errors": s.errors,
            "seconds": round(s.seconds, 3),
            "rps": round(s.rps, 1),
            "latency_ms": stats(s.latencies),
            "cpu_seconds": {k: round(v, 2) for k, v in s.cpu.items()},
            "rps_per_bridge_cpu_second": round(s.requests / bridge_cpu, 1)
            if bridge_cpu > 0.05
            else None,
        }

    def versus(name: str, totals: dict[str, Saturation], pairs: dict[str, Any]) -> dict[str, Any]:
        """Bridge `name` (recording on) against the plain bridge: added latency, and its
        throughput and per CPU-second loss over all slices and per slice."""
        out: dict[str, Any] = {}
        for kind in ("json", "sse"):
            off, on = seq[("bridge", kind)], seq[(name, kind)]
            out[kind] = {
                "recording_ms": stats(on.total),
                "added_p50_ms": stats(on.total)["p50"] - stats(off.total)["p50"],
                "added_p99_ms": stats(on.total)["p99"] - stats(off.total)["p99"],
                "added_ttfb_p50_ms": stats(on.ttfb)["p50"] - stats(off.ttfb)["p50"],
                "paired_diff_ms": stats([y - x for x, y in zip(off.total, on.total, strict=True)]),
            }
            on_sat = sat(totals[kind])
            off_sat = sat(sat_json if kind == "json" else sat_sse)
            out[kind]["saturation"] = on_sat
            out[kind]["throughput_loss_pct"] = 100 * (1 - on_sat["rps"] / off_sat["rps"])
            per_cpu_on = on_sat["rps_per_bridge_cpu_second"]
            per_cpu_off = off_sat["rps_per_bridge_cpu_second"]
            out[kind]["per_cpu_loss_pct"] = (
                100 * (1 - per_cpu_on / per_cpu_off) if per_cpu_on and per_cpu_off else None
            )
            out[kind]["slices"] = _slice_losses(pairs[kind])
        return out

    record: dict[str, Any] = {}
    if recorded is not None:
        record = versus("recording", {"json": raw["rec_json"], "sse": raw["rec_sse"]}, slices)
    baseline: dict[str, Any] = {}
    if based is not None:
        baseline = versus("baseline", base_totals, base_slices)
        baseline["rev"] = args.baseline
        for kind in ("json", "sse"):
            after = record[kind]["saturation"]["rps_per_bridge_cpu_second"]
            before = baseline[kind]["saturation"]["rps_per_bridge_cpu_second"]
            baseline[kind]["after_over_before_per_cpu"] = (
                after / before if after and before else None
            )
    return {
        "recording": record,
        "baseline": baseline,
        "plan": plan,
        "concurrency": c,
        "sse_chunks": SSE_CHUNKS,
        "sse_gap_ms": args.sse_gap_ms,
        "bridge_log_level": args.log_level,
        "bridge_cpus": sorted(os.sched_getaffinity(plain[1].pid)),
        "bridge_requests": bridge_requests,
        "latency": latency,
        "saturation": {"json": sat(sat_json), "sse": sat(sat_sse), "direct_json": sat(ref)},
        "rss_mb": {
            "before": round(raw["rss_before"], 1),
            "after": round(raw["rss_after"], 1),
            "max_sampled": round(max([*sat_json.rss, *sat_sse.rss, raw["rss_after"]]), 1),
            "samples": [round(x, 1) for x in sat_json.rss + sat_sse.rss],
        },
        "elapsed_seconds": round(raw["elapsed"], 1),
        "bars": BARS,
    }


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": [round(v, 2) for v in values],
    }


def _slice_losses(pairs: list[tuple[Saturation, Saturation]]) -> dict[str, Any]:
    """Recording's loss in each saturation slice (the two bridges' turns of one slice):
    throughput and per bridge CPU-second, each as median, range and values."""
    throughput = [100 * (1 - on.rps / off.rps) for off, on in pairs]
    per_cpu = [
        100 * (1 - (on.requests / on.cpu["bridge"]) / (off.requests / off.cpu["bridge"]))
        for off, on in pairs
        if on.cpu.get("bridge", 0.0) > 0.01 and off.cpu.get("bridge", 0.0) > 0.01
    ]
    return {
        "count": len(pairs),
        "throughput_loss_pct": _spread(throughput) if throughput else None,
        "per_cpu_loss_pct": _spread(per_cpu) if per_cpu else None,
    }


def _report(r: dict[str, Any]) -> int:
    lat = r["latency"]
    sj, ss, ref = r["saturation"]["json"], r["saturation"]["sse"], r["saturation"]["direct_json"]
    rss = r["rss_mb"]

    rows: list[list[Any]] = []

    def row(label: str, value: Any, bar: float | None = None, higher: bool = False) -> None:
        """One table line; `bar` from DESIGN §10 (None: informational)."""
        if bar is None:
            rows.append([label, value, "-", ""])
            return
        shown = f"{'>=' if higher else '<='} {bar:g}"
        if not isinstance(value, int | float) or value != value:
            met = "n/a"
        else:
            met = "yes" if (value >= bar if higher else value <= bar) else "NO"
        rows.append([label, value, shown, met])

    c = r["concurrency"]
    row("added latency p50, JSON (ms)", lat["json"]["added_p50_ms"], 1)
    row("added latency p99, JSON (ms)", lat["json"]["added_p99_ms"], 3)
    row("added latency p50, SSE whole stream (ms)", lat["sse"]["added_p50_ms"], 1)
    row("added latency p99, SSE whole stream (ms)", lat["sse"]["added_p99_ms"], 3)
    row("added TTFB p50, SSE (ms)", lat["sse"]["added_ttfb_p50_ms"], 1)
    row("added TTFB p99, SSE (ms)", lat["sse"]["added_ttfb_p99_ms"])
    row(
        "  direct / bridge p50, JSON (ms)",
        f"{lat['json']['direct_ms']['p50']:.2f} / {lat['json']['bridge_ms']['p50']:.2f}",
    )
    row(f"throughput JSON, c={c} (req/s)", sj["rps"], 1000, higher=True)
    row("  per bridge CPU-second (req/s)", sj["rps_per_bridge_cpu_second"], 1000, higher=True)
    row(f"throughput SSE, c={c} (req/s)", ss["rps"])
    row("  per bridge CPU-second (req/s)", ss["rps_per_bridge_cpu_second"])
    row("  direct JSON, same client (req/s)", ref["rps"])
    row("bridge RSS before (MB)", rss["before"], 150)
    row(f"bridge RSS after {r['bridge_requests']} req (MB)", rss["after"], 150)
    row("bridge RSS max sampled (MB)", rss["max_sampled"], 150)
    row("errors at saturation", sj["errors"] + ss["errors"], 0)
    rec = r["recording"]
    if rec:
        for kind in ("json", "sse"):
            k = rec[kind]
            label = "JSON" if kind == "json" else "SSE whole stream"
            row(f"recording on vs off: added p50, {label} (ms)", round(k["added_p50_ms"], 3), 0.05)
            row(f"  paired difference p50, {label} (ms)", round(k["paired_diff_ms"]["p50"], 3))
            row(f"  added p99, {label} (ms)", round(k["added_p99_ms"], 3))
            row(f"  throughput loss, {label} (%)", round(k["throughput_loss_pct"], 2), 3)
            row(
                f"  per bridge CPU-second, {label}: on (req/s)",
                k["saturation"]["rps_per_bridge_cpu_second"],
            )
            if k["per_cpu_loss_pct"] is not None:
                row(
                    f"  per bridge CPU-second loss, {label} (%)", round(k["per_cpu_loss_pct"], 2), 3
                )
            sl = k["slices"]
            for name, what in (
                ("throughput_loss_pct", "throughput"),
                ("per_cpu_loss_pct", "per CPU-second"),
            ):
                spread = sl[name]
                if spread is not None:
                    row(
                        f"  {what} loss per slice, {label}: median (min..max) of {sl['count']} (%)",
                        f"{spread['median']:.2f} ({spread['min']:.2f}..{spread['max']:.2f})",
                    )
        row("records built (counting sink)", rec.get("records"))
        row(
            "  mean serialized record (bytes)",
            round(rec["record_bytes"] / rec["records"]) if rec.get("records") else None,
        )
        errors = rec["json"]["saturation"]["errors"] + rec["sse"]["saturation"]["errors"]
        row("errors at saturation, recording bridge", errors, 0)
    base = r.get("baseline")
    if base:
        for kind in ("json", "sse"):
            k = base[kind]
            label = "JSON" if kind == "json" else "SSE whole stream"
            head = f"baseline {base['rev']} (recording on) vs off"
            row(f"{head}: added p50, {label} (ms)", round(k["added_p50_ms"], 3))
            row(f"  throughput loss, {label} (%)", round(k["throughput_loss_pct"], 2))
            if k["per_cpu_loss_pct"] is not None:
                row(f"  per bridge CPU-second loss, {label} (%)", round(k["per_cpu_loss_pct"], 2))
            spread = k["slices"]["per_cpu_loss_pct"]
            if spread is not None:
                row(
                    f"  per CPU-second loss per slice, {label}: median (min..max) (%)",
                    f"{spread['median']:.2f} ({spread['min']:.2f}..{spread['max']:.2f})",
                )
            if k["after_over_before_per_cpu"] is not None:
                row(
                    f"  recording bridge / baseline, req per CPU-second, {label}",
                    round(k["after_over_before_per_cpu"], 4),
                )
        errors = base["json"]["saturation"]["errors"] + base["sse"]["saturation"]["errors"]
        row("errors at saturation, baseline bridge", errors, 0)
    note = (
        f"saturation CPU seconds (JSON): {sj['cpu_seconds']}; "
        f"elapsed {r['elapsed_seconds']} s; bridge log level {r['bridge_log_level']}; "
        f"bridge CPUs {r['bridge_cpus']}"
    )
    publish("bridge_overhead", r, (["metric", "measured", "DESIGN §10 bar", "met"], rows), note)
    return 1 if sj["errors"] or ss["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
