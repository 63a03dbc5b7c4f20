"""Every core: the bridge with `--workers 2` against `--workers 1`, same client and upstream.

Starts the fast fake upstream of bridge_overhead.py (its own process), one
`aibridge config-service` (SQLite, provider `fake`), one bridge with one worker and one
with `--workers N` (default 2; each worker is a process on the shared port). This process
is the load generator (keep-alive HTTP/1.1 on uvloop, `--concurrency` connections opened
fresh per run, so the kernel spreads them over the workers). The two bridges are
saturated in turn, `--rounds` times each, alternating; CPU seconds of every bridge
process (the workers; the supervising parent too, which should stay at ~0) and of the
upstream are read from /proc.

Figures: throughput (req/s, wall), bridge cores used (bridge CPU-seconds per second),
requests per bridge CPU-second, and the ratios N workers / 1 worker of each. DESIGN §10:
N workers >= 0.8 x N throughput on N cores (>= 1.6x with 2). On a 2-core machine the
client and the upstream take their share of the same two cores, so the wall ratio is
bounded by what is left for the bridge: read it with the "bridge cores used" row.

    python bench/workers.py [--requests 20000] [--concurrency 64] [--workers 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, percentile, publish
from _stack import PROVIDER, Proc, Stack, bridge_env, free_port, stack, start, wait_ready
from bridge_overhead import Saturation, Target, _body, _saturate, bridge_target

# Bridge by worker count: (process, port, pids serving).
Bridges = dict[int, tuple[Proc, int, list[int]]]


def _bridge(
    name: str, target: str, workers: int, tmp: Path, record: bool
) -> tuple[Proc, int, list[int]]:
    """A bridge with `workers` workers: (process, port, pids serving)."""
    port = free_port()
    env = {**bridge_env(target, port, tmp / name), "AIBRIDGE_WORKERS": str(workers)}
    if not record:
        env["AIBRIDGE_RECORDING"] = "false"
    env["AIBRIDGE_NODE_ID"] = f"bench-{name}"
    proc = start(name, ["bridge"], env, tmp, timeout=60)
    if workers == 1:
        proc.wait_for_log("bridge listening", 60)
        pids = [proc.pid]
    else:
        pids = [int(p) for p in proc.wait_for_log("workers ready", 60)["pids"]]
    wait_ready(port)
    return proc, port, pids


def _pids(bridges: Bridges, n: int, upstream_pid: int) -> dict[str, int]:
    """The processes whose CPU a run of bridge `n` counts: its workers, its supervising
    parent (with several workers) and the upstream."""
    proc, _, workers = bridges[n]
    pids = {f"w{i}": pid for i, pid in enumerate(workers)}
    if n > 1:
        pids["parent"] = proc.pid
    return {**pids, "upstream": upstream_pid}


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--requests", type=int, default=20_000, help="requests per saturation run")
    p.add_argument("--concurrency", type=int, default=64, help="in flight at saturation")
    p.add_argument("--workers", type=int, default=2, help="workers of the second bridge")
    p.add_argument("--rounds", type=int, default=2, help="runs per bridge, alternating")
    p.add_argument("--kind", choices=("json", "sse"), default="json")
    p.add_argument(
        "--load",
        choices=("python", "c"),
        default="python",
        help="client and upstream: the bench's Python ones, or wrk + nginx (JSON only; "
        "a few µs per request, so nearly every core is left to the bridge)",
    )
    p.add_argument("--seconds", type=float, default=10.0, help="--load c: seconds per run")
    p.add_argument(
        "--no-record",
        action="store_true",
        help="recording off in both bridges: the config service's ingestion (~0.25 cores "
        "at these rates) off the two cores the workers share with the load",
    )
    args = p.parse_args()
    if args.load == "c":
        from _floor import available

        if (missing := available()) is not None:
            raise SystemExit(missing)
        if args.kind != "json":
            raise SystemExit("--load c measures JSON completions only")

    upstream = None
    if args.load == "c":
        from _floor import NginxUpstream

        upstream = NginxUpstream
    with stack(upstream=upstream) as s:
        bridges: Bridges = {}
        for n in (1, args.workers):
            bridges[n] = _bridge(f"bridge-{n}w", s.target, n, s.tmp, not args.no_record)
            s.add(bridges[n][0])
        run = _run_c if args.load == "c" else _run
        result = run(args, s, bridges)
    return _report(result)


def _run_c(args: argparse.Namespace, s: Stack, bridges: Bridges) -> dict[str, Any]:
    """Each bridge saturated in turn by wrk against the nginx upstream."""
    from _common import cpu_seconds
    from _floor import run_wrk

    headers = {"content-type": "application/json", "authorization": f"Bearer {s.token}"}
    started = time.perf_counter()
    runs: dict[int, list[Saturation]] = {n: [] for n in bridges}
    wrk_latency: dict[int, list[tuple[float, float]]] = {n: [] for n in bridges}
    for i in range(args.rounds + 1):  # round 0 warms every worker up and is not counted
        order = list(bridges) if i % 2 == 0 else list(reversed(bridges))
        for n in order:
            pids = _pids(bridges, n, s.upstream_pid)
            cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
            port = bridges[n][1]
            url = f"http://127.0.0.1:{port}/{PROVIDER}/v1/chat/completions"
            seconds = 2.0 if i == 0 else args.seconds
            w = run_wrk(url, headers, _body(False), args.concurrency, seconds, s.tmp)
            cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
            cpu["client"] = w.client_cpu
            if i:
                runs[n].append(Saturation(w.requests, w.seconds, w.errors, [], cpu, []))
                wrk_latency[n].append((w.p50_ms, w.p99_ms))
    result = _figures(args, runs, started)
    for n, pairs in wrk_latency.items():  # wrk reports percentiles, not samples
        result["figures"][str(n)]["latency_ms"] = {
            "p50": round(sorted(p50 for p50, _ in pairs)[len(pairs) // 2], 2),
            "p99": round(max(p99 for _, p99 in pairs), 2),
        }
    return result


def _run(args: argparse.Namespace, s: Stack, bridges: Bridges) -> dict[str, Any]:
    import uvloop

    def target_of(n: int) -> Target:
        return bridge_target(f"{n}w", bridges[n][1], s.token)

    async def run() -> dict[int, list[Saturation]]:
        runs: dict[int, list[Saturation]] = {n: [] for n in bridges}
        for n in bridges:  # warm-up: every worker's connections and snapshot
            await _saturate(target_of(n), args.kind, 1000, args.concurrency, {}, None)
        for i in range(args.rounds):
            order = list(bridges) if i % 2 == 0 else list(reversed(bridges))
            for n in order:
                pids = _pids(bridges, n, s.upstream_pid)
                target = target_of(n)
                runs[n].append(
                    await _saturate(target, args.kind, args.requests, args.concurrency, pids, None)
                )
        return runs

    started = time.perf_counter()
    return _figures(args, uvloop.run(run()), started)


def _figures(
    args: argparse.Namespace, runs: dict[int, list[Saturation]], started: float
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for n, sats in runs.items():
        requests = sum(s.requests for s in sats)
        seconds = sum(s.seconds for s in sats)
        bridge_cpu = sum(
            v for s in sats for k, v in s.cpu.items() if k.startswith("w") or k == "parent"
        )
        parent_cpu = sum(s.cpu.get("parent", 0.0) for s in sats)
        latencies = [x * 1000 for s in sats for x in s.latencies] or [0.0]
        figures[str(n)] = {
            "workers": n,
            "requests": requests,
            "errors": sum(s.errors for s in sats),
            "rps": round(requests / seconds, 1),
            "bridge_cpu_seconds": round(bridge_cpu, 2),
            "parent_cpu_seconds": round(parent_cpu, 3),
            "bridge_cores_used": round(bridge_cpu / seconds, 2),
            "rps_per_bridge_cpu_second": round(requests / bridge_cpu, 1),
            "upstream_cpu_seconds": round(sum(s.cpu["upstream"] for s in sats), 2),
            "client_cpu_seconds": round(sum(s.cpu["client"] for s in sats), 2),
            "latency_ms": {
                "p50": round(percentile(latencies, 50), 2),
                "p99": round(percentile(latencies, 99), 2),
            },
            "per_worker_cpu_seconds": {
                k: round(sum(s.cpu.get(k, 0.0) for s in sats), 2)
                for k in sats[0].cpu
                if k.startswith("w")
            },
        }
    one, many = figures["1"], figures[str(args.workers)]
    return {
        "kind": args.kind,
        "load": args.load,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "workers": args.workers,
        "cpus": cpu_count(),
        "figures": figures,
        "ratio": {
            "rps": round(many["rps"] / one["rps"], 2),
            "bridge_cores_used": round(many["bridge_cores_used"] / one["bridge_cores_used"], 2),
            "rps_per_bridge_cpu_second": round(
                many["rps_per_bridge_cpu_second"] / one["rps_per_bridge_cpu_second"], 2
            ),
        },
        "elapsed_seconds": round(time.perf_counter() - started, 1),
        "bar": {"rps_ratio": 0.8 * args.workers},
    }


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def _report(r: dict[str, Any]) -> int:
    one, many = r["figures"]["1"], r["figures"][str(r["workers"])]
    n = r["workers"]
    rows: list[list[Any]] = []
    for label, key in (
        ("throughput (req/s)", "rps"),
        ("bridge cores used (CPU-s per s)", "bridge_cores_used"),
        ("requests per bridge CPU-second", "rps_per_bridge_cpu_second"),
    ):
        rows.append([label, one[key], many[key], r["ratio"][key]])
    rows.append(["latency p50 / p99 (ms)", one["latency_ms"], many["latency_ms"], "-"])
    rows.append(["supervising parent CPU (s)", "-", many["parent_cpu_seconds"], "-"])
    rows.append(
        ["per-worker CPU (s)", one["per_worker_cpu_seconds"], many["per_worker_cpu_seconds"], "-"]
    )
    rows.append(["errors", one["errors"], many["errors"], "-"])
    note = (
        f"{r['kind']}, c={r['concurrency']}, {r['rounds']} rounds each, {r['cpus']} CPUs; "
        f"bar: throughput ratio >= {r['bar']['rps_ratio']:g}; elapsed {r['elapsed_seconds']} s"
    )
    publish("workers", r, (["figure", "1 worker", f"{n} workers", "ratio"], rows), note)
    return 1 if one["errors"] or many["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
