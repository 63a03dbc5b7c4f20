"""The proxy path: client → proxy → bridge → upstream, against client → bridge → upstream
and client → upstream, on the same client, upstream and bridge.

Starts the fast fake upstream of bridge_overhead.py (its own process), one
`aibridge config-service` (SQLite; the upstream seeded as provider `fake`, so the proxy
intercepts its host), one `aibridge bridge` and one `aibridge proxy` of this tree. With
`--baseline REV` a second proxy runs the code of git revision REV (exported with
`git archive` into a temp dir and put first on its PYTHONPATH) on the same bridge:
before → after from one run.

The client sends absolute-form requests to the proxy (`POST http://<upstream host>/v1/...`
with `Proxy-Authorization: Basic` carrying the gateway token, as an HTTP_PROXY client does):
the proxy's own cost is the hand-off to the bridge, not TLS (a CONNECT + MITM client adds
the TLS handshake once per connection and record encryption per request on top).

Phases: warm-up; latency (sequential, every path interleaved, order alternating per round:
JSON and a 20-chunk SSE stream; added = path percentile - direct percentile, TTFB = time
to the first body byte); saturation of each proxy at `--concurrency` (JSON, then SSE),
CPU seconds of the proxy, bridge and upstream read from /proc: requests per proxy
CPU-second. DESIGN §10: added p50 ≤ 2 ms over direct, ≥ 1,000 requests per proxy CPU-second.

    python bench/proxy_path.py [--requests 20000] [--concurrency 64] [--baseline main]
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import export_tree, parser, percentile, publish
from _stack import PROXY, Proc, bridge_env, free_port, serve_bridge, stack, start, wait_ready
from bridge_overhead import (
    Samples,
    Saturation,
    Target,
    _saturate,
    _sequential,
    bridge_target,
    direct_target,
    target,
)

BARS = {"added_p50_ms": 2.0, "rps_per_proxy_cpu_second": 1000.0}


def _proxy(name: str, target: str, bridge_port: int, tmp: Path, tree: Path | None) -> Proc:
    port = free_port()
    env = {
        "AIBRIDGE_CONFIG_SERVICE": target,
        "AIBRIDGE_PROXY_TOKEN": PROXY,
        "AIBRIDGE_PROXY_LISTEN": f"127.0.0.1:{port}",
        "AIBRIDGE_PROXY_BRIDGE_URL": f"http://127.0.0.1:{bridge_port}",
        "AIBRIDGE_DATA_DIR": str(tmp / f"{name}-data"),
        "AIBRIDGE_NODE_ID": f"bench-{name}",
        "AIBRIDGE_LOG_FORMAT": "json",
        "AIBRIDGE_LOG_LEVEL": "info",
    }
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    proc = start(name, ["proxy"], env, tmp, ready="proxy ready", timeout=60)
    proc.ready["port"] = port
    wait_ready(port)
    return proc


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--requests", type=int, default=20_000, help="saturation requests per proxy")
    p.add_argument("--concurrency", type=int, default=64, help="in flight at saturation")
    p.add_argument("--rounds", type=int, default=1000, help="latency rounds")
    p.add_argument("--baseline", default="", help="git revision whose proxy is measured too")
    args = p.parse_args()

    with stack() as s:
        tmp = s.tmp
        bridge_port = free_port()
        env = bridge_env(s.target, bridge_port, tmp / "bridge")
        bridge = serve_bridge(s.add(start("bridge", ["bridge"], env, tmp)), bridge_port)
        proxies = {"proxy": s.add(_proxy("proxy", s.target, bridge_port, tmp, None))}
        if args.baseline:
            tree = export_tree(args.baseline, tmp / "baseline-tree")
            before = _proxy("proxy-before", s.target, bridge_port, tmp, tree)
            proxies["proxy_before"] = s.add(before)
        result = _run(args, s.up_port, bridge_port, s.token, s.upstream_pid, bridge, proxies)
    return _report(result)


def _targets(up_port: int, bridge_port: int, token: str, proxies: dict[str, Proc]) -> list[Target]:
    upstream_host = f"127.0.0.1:{up_port}"
    basic = base64.b64encode(f"bench:{token}".encode()).decode()
    targets = [direct_target(up_port), bridge_target("bridge", bridge_port, token)]
    for name, proc in proxies.items():
        targets.append(
            target(
                name,
                int(proc.ready["port"]),
                f"http://{upstream_host}/v1/chat/completions",
                upstream_host,
                {"proxy-authorization": f"Basic {basic}"},
            )
        )
    return targets


def _run(
    args: argparse.Namespace,
    up_port: int,
    bridge_port: int,
    token: str,
    upstream_pid: int,
    bridge: Proc,
    proxies: dict[str, Proc],
) -> dict[str, Any]:
    import uvloop

    targets = _targets(up_port, bridge_port, token, proxies)
    by_name = {t.name: t for t in targets}
    c = args.concurrency

    async def run() -> dict[str, Any]:
        for t in targets:
            warm = await _saturate(t, "json", 300, 8, {}, None)
            if warm.errors:
                raise RuntimeError(f"warm-up {t.name}: {warm.errors} errors")
        seq = await _sequential(targets, args.rounds)
        sat: dict[str, dict[str, Saturation]] = {}
        for name, proc in proxies.items():
            pids = {"proxy": proc.pid, "bridge": bridge.pid, "upstream": upstream_pid}
            sat[name] = {
                "json": await _saturate(by_name[name], "json", args.requests, c, pids, None),
                "sse": await _saturate(
                    by_name[name], "sse", max(1, args.requests // 5), c, pids, None
                ),
            }
        pids = {"bridge": bridge.pid, "upstream": upstream_pid}
        sat["bridge"] = {
            "json": await _saturate(by_name["bridge"], "json", args.requests, c, pids, None)
        }
        return {"seq": seq, "sat": sat}

    t0 = time.perf_counter()
    raw = uvloop.run(run())
    seq: dict[tuple[str, str], Samples] = raw["seq"]

    def stats(values: list[float]) -> dict[str, float]:
        ms = [v * 1000 for v in values]
        return {"p50": round(percentile(ms, 50), 3), "p99": round(percentile(ms, 99), 3)}

    latency: dict[str, Any] = {}
    for kind in ("json", "sse"):
        direct, via_bridge = seq[("direct", kind)], seq[("bridge", kind)]
        entry: dict[str, Any] = {
            "direct_ms": stats(direct.total),
            "bridge_ms": stats(via_bridge.total),
            "direct_ttfb_ms": stats(direct.ttfb),
            "bridge_ttfb_ms": stats(via_bridge.ttfb),
        }
        for name in proxies:
            s = seq[(name, kind)]
            total, ttfb = stats(s.total), stats(s.ttfb)
            entry[name] = {
                "total_ms": total,
                "ttfb_ms": ttfb,
                **{
                    f"added_{q}_ms": round(total[q] - entry["direct_ms"][q], 3)
                    for q in ("p50", "p99")
                },
                **{
                    f"hop_{q}_ms": round(total[q] - entry["bridge_ms"][q], 3)
                    for q in ("p50", "p99")
                },
                **{
                    f"added_ttfb_{q}_ms": round(ttfb[q] - entry["direct_ttfb_ms"][q], 3)
                    for q in ("p50", "p99")
                },
            }
        latency[kind] = entry

    def summary(s: Saturation, who: str) -> dict[str, Any]:
        cpu = s.cpu.get(who, 0.0)
        return {
            "requests": s.requests,
            "errors": s.errors,
            "rps": round(s.rps, 1),
            "latency_ms": stats(s.latencies),
            "cpu_seconds": {k: round(v, 2) for k, v in s.cpu.items()},
            f"rps_per_{who}_cpu_second": round(s.requests / cpu, 1) if cpu > 0.05 else None,
            f"{who}_cpu_us_per_request": round(cpu / s.requests * 1e6, 1) if s.requests else None,
        }

    saturation = {
        name: {kind: summary(s, "proxy") for kind, s in runs.items()}
        for name, runs in raw["sat"].items()
        if name != "bridge"
    }
    saturation["bridge"] = {"json": summary(raw["sat"]["bridge"]["json"], "bridge")}
    return {
        "concurrency": c,
        "rounds": args.rounds,
        "baseline": args.baseline,
        "proxies": list(proxies),
        "latency": latency,
        "saturation": saturation,
        "elapsed_seconds": round(time.perf_counter() - t0, 1),
        "bars": BARS,
    }


def _report(r: dict[str, Any]) -> int:
    rows: list[list[Any]] = []
    errors = 0
    for name in r["proxies"]:
        j, s = r["latency"]["json"][name], r["latency"]["sse"][name]
        sj, ss = r["saturation"][name]["json"], r["saturation"][name]["sse"]
        errors += sj["errors"] + ss["errors"]
        per_cpu = sj["rps_per_proxy_cpu_second"]
        rows += [
            [
                name,
                "added p50 / p99 over direct, JSON (ms)",
                f"{j['added_p50_ms']} / {j['added_p99_ms']}",
                "p50 <= 2",
            ],
            [
                name,
                "added p50 / p99 over the bridge alone, JSON (ms)",
                f"{j['hop_p50_ms']} / {j['hop_p99_ms']}",
                "-",
            ],
            [
                name,
                "added p50 / p99 over direct, SSE whole stream (ms)",
                f"{s['added_p50_ms']} / {s['added_p99_ms']}",
                "-",
            ],
            [
                name,
                "added TTFB p50 / p99, SSE (ms)",
                f"{s['added_ttfb_p50_ms']} / {s['added_ttfb_p99_ms']}",
                "-",
            ],
            [name, f"throughput JSON, c={r['concurrency']} (req/s)", sj["rps"], "-"],
            [name, "  per proxy CPU-second (req/s)", per_cpu, ">= 1000"],
            [name, "  proxy CPU per request (µs)", sj["proxy_cpu_us_per_request"], "-"],
            [name, f"throughput SSE, c={r['concurrency']} (req/s)", ss["rps"], "-"],
            [name, "  per proxy CPU-second (req/s)", ss["rps_per_proxy_cpu_second"], "-"],
            [name, "errors at saturation", sj["errors"] + ss["errors"], "0"],
        ]
    b = r["saturation"]["bridge"]["json"]
    rows.append(["bridge", "throughput JSON alone (req/s)", b["rps"], "-"])
    rows.append(["bridge", "  per bridge CPU-second (req/s)", b["rps_per_bridge_cpu_second"], "-"])
    lat = r["latency"]["json"]
    rows.append(
        [
            "-",
            "direct / bridge p50, JSON (ms)",
            f"{lat['direct_ms']['p50']} / {lat['bridge_ms']['p50']}",
            "-",
        ]
    )
    note = f"elapsed {r['elapsed_seconds']} s"
    publish("proxy_path", r, (["path", "metric", "measured", "DESIGN §10 bar"], rows), note)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
