"""The C floor: the same client and fake upstream measured direct, through the bridge and
through nginx (Debian's package), interleaved in one run.

nginx runs from a config generated into a temp dir: one worker, `daemon off`, a reverse
proxy with `proxy_http_version 1.1`, keep-alive to the upstream (`keepalive 64`),
`proxy_buffering off` (SSE passes chunk by chunk), `keepalive_requests` high on both sides,
an access log line per request (as the bridge writes one), pid and log files in the temp
dir; it is started as a subprocess and stopped at the end. The bridge is `aibridge bridge`
as deployed (log level info, metrics, recording on and shipping to
the config service). Phases: warm-up; sequential latency rounds, the order of the targets
rotating each round (JSON and an SSE stream of `--sse-chunks` chunks); saturation of each
gateway in turn, `--concurrency` connections, JSON then SSE (`--slices` turns each, so every
gateway sees the same machine). Gateway CPU is read from /proc (nginx: master and worker).

`--baseline REV` adds a bridge running the code of git revision REV (`git archive`, first on
its PYTHONPATH) on the same config service: the bridge before → after in the same run.
`--profile DIR`: py-spy on each bridge during its first JSON saturation slice.

    python bench/nginx_floor.py [--requests 20000] [--concurrency 64] [--sse-chunks 50]
                                [--sse-gap-ms 0]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import export_tree, percentile, table, write_result
from _floor import Nginx
from _stack import (
    PROVIDER,
    UPSTREAM_KEY,
    Proc,
    bridge_env,
    free_port,
    request_bytes,
    stack,
    start,
    wait_ready,
)
from bridge_overhead import Samples, Saturation, Target, _body, _saturate, _sequential

# The gateway's part of the config; _floor.Nginx adds the process settings around it.
REVERSE_PROXY = """\
    access_log {tmp}/nginx-access.log;
    upstream fake {{
        server 127.0.0.1:{upstream};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        keepalive_requests 1000000;  # the default, 1,000, closes the client's connections
        location / {{
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
"""


def _targets(up_port: int, gateways: dict[str, int], token: str) -> list[Target]:
    common = {"content-type": "application/json", "accept": "application/json"}

    def target(name: str, port: int, path: str, key: str) -> Target:
        auth = {**common, "authorization": f"Bearer {key}"}
        return Target(
            name,
            port,
            {
                k: request_bytes("POST", path, f"127.0.0.1:{port}", auth, _body(k == "sse"))
                for k in ("json", "sse")
            },
        )

    out = [target("direct", up_port, "/v1/chat/completions", UPSTREAM_KEY)]
    for name, port in gateways.items():
        if name == "nginx":
            out.append(target(name, port, "/v1/chat/completions", UPSTREAM_KEY))
        else:
            out.append(target(name, port, f"/{PROVIDER}/v1/chat/completions", token))
    return out


async def _measure(
    args: argparse.Namespace, targets: list[Target], pids: dict[str, dict[str, int]]
) -> dict[str, Any]:
    for t in targets:
        warm = await _saturate(t, "json", 300, 8, {}, None)
        warm_sse = await _saturate(t, "sse", 50, 8, {}, None)
        if warm.errors or warm_sse.errors:
            raise RuntimeError(f"warm-up {t.name}: {warm.errors + warm_sse.errors} errors")
    seq = await _sequential(targets, args.rounds)
    gateways = [t for t in targets if t.name != "direct"]
    sat: dict[tuple[str, str], Saturation] = {}
    for kind, n in (("json", args.requests), ("sse", args.streams)):
        for i in range(args.slices):
            part = n // args.slices
            for t in gateways[i % len(gateways) :] + gateways[: i % len(gateways)]:
                spy = None
                if args.profile and kind == "json" and i == 0 and t.name != "nginx":
                    spy = _py_spy(pids[t.name]["gateway"], Path(args.profile) / f"{t.name}.txt")
                got = await _saturate(t, kind, part, args.concurrency, pids[t.name], None)
                if spy is not None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its profile and exits
                    spy.wait(60)
                sat[(t.name, kind)] = sat[(t.name, kind)] + got if (t.name, kind) in sat else got
    return {"seq": seq, "sat": sat}


def _py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy (next to this Python, else on PATH) sampling `pid` into `out` until SIGINT:
    collapsed stacks with C frames, for `profile_shares.py --bridge`."""
    exe = Path(sys.executable).with_name("py-spy")
    spy = str(exe) if exe.exists() else shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy (.venv/bin/pip install py-spy)")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [spy, "record", "-r", "499", "--native", "-f", "raw", "-o", str(out), "-p", str(pid)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the load starts
    return proc


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"p50": percentile(ms, 50), "p99": percentile(ms, 99)}


def _summary(raw: dict[str, Any], names: list[str]) -> dict[str, Any]:
    seq: dict[tuple[str, str], Samples] = raw["seq"]
    sat: dict[tuple[str, str], Saturation] = raw["sat"]
    out: dict[str, Any] = {}
    for name in names:
        entry: dict[str, Any] = {}
        for kind in ("json", "sse"):
            d, g = seq[("direct", kind)], seq[(name, kind)]
            total, base = _stats(g.total), _stats(d.total)
            ttfb, base_ttfb = _stats(g.ttfb), _stats(d.ttfb)
            s = sat[(name, kind)]
            cpu = sum(v for k, v in s.cpu.items() if k != "client")
            entry[kind] = {
                "p50_ms": total["p50"],
                "added_p50_ms": total["p50"] - base["p50"],
                "added_p99_ms": total["p99"] - base["p99"],
                "added_ttfb_p50_ms": ttfb["p50"] - base_ttfb["p50"],
                "added_ttfb_p99_ms": ttfb["p99"] - base_ttfb["p99"],
                "rps": round(s.rps, 1),
                "errors": s.errors,
                "gateway_cpu_seconds": round(cpu, 3),
                "per_cpu_second": round(s.requests / cpu, 1) if cpu > 0.01 else None,
                "us_cpu_per_request": round(1e6 * cpu / s.requests, 1) if s.requests else None,
            }
        out[name] = entry
    return out


def _ratios(figures: dict[str, Any], over: str) -> dict[str, Any]:
    """bridge / nginx for throughput and CPU; for the added latencies (nginx's near zero,
    within noise) bridge - nginx in ms."""
    out: dict[str, Any] = {}
    for kind in ("json", "sse"):
        b, n = figures["bridge"][kind], figures[over][kind]
        entry: dict[str, Any] = {
            k: round(b[k] - n[k], 2) for k in ("added_p50_ms", "added_p99_ms", "added_ttfb_p50_ms")
        }
        for k in ("rps", "per_cpu_second", "us_cpu_per_request"):
            entry[k] = round(b[k] / n[k], 2) if n[k] and b[k] else None
        out[kind] = entry
    return out


def _start_bridge(
    name: str, target: str, tmp: Path, tree: Path | None, log_level: str
) -> tuple[Proc, int]:
    port = free_port()
    env = bridge_env(target, port, tmp / f"{name}-data", log_level)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    proc = start(name, ["bridge"], env, tmp)
    proc.wait_for_log("bridge listening")
    wait_ready(port)
    return proc, port


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--requests", type=int, default=20_000, help="JSON requests per gateway")
    p.add_argument("--streams", type=int, default=2_000, help="SSE streams per gateway")
    p.add_argument("--concurrency", type=int, default=64, help="in flight at saturation")
    p.add_argument("--sse-chunks", type=int, default=50, help="chunks per SSE stream")
    p.add_argument(
        "--sse-gap-ms",
        type=float,
        default=0.0,
        help="upstream pause between SSE chunks (0: back to back, so a gateway's read "
        "often holds many; > 0: one event per read, as a model's tokens arrive)",
    )
    p.add_argument("--rounds", type=int, default=500, help="sequential latency rounds")
    p.add_argument("--slices", type=int, default=2, help="saturation turns per gateway")
    p.add_argument("--log-level", default="info", help="the bridge's AIBRIDGE_LOG_LEVEL")
    p.add_argument("--baseline", default="", help="git revision whose bridge is measured too")
    p.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    p.add_argument(
        "--profile",
        default="",
        help="a directory: py-spy on each bridge during its first JSON saturation slice "
        "(<dir>/bridge.txt, <dir>/baseline.txt; read with profile_shares.py --bridge)",
    )
    return p.parse_args()


def main() -> int:
    args = _parse()
    if not Path(args.nginx).exists():
        raise SystemExit(f"nginx not found at {args.nginx} (apt-get install nginx)")
    with stack(args.sse_gap_ms, prefix="aibridge-nginx-", chunks=args.sse_chunks) as s:
        tmp, up_port, target, token = s.tmp, s.up_port, s.target, s.token
        nginx: Nginx | None = None
        try:
            bridges: dict[str, Path | None] = {"bridge": None}
            if args.baseline:
                bridges["baseline"] = export_tree(args.baseline, tmp / "baseline-tree")
            ports: dict[str, int] = {}
            pids: dict[str, dict[str, int]] = {}
            for name, tree in bridges.items():
                proc, ports[name] = _start_bridge(name, target, tmp, tree, args.log_level)
                s.add(proc)
                pids[name] = {"gateway": proc.pid}
            nginx = Nginx(args.nginx, tmp, REVERSE_PROXY, upstream=up_port)
            ports["nginx"] = nginx.port
            nginx_pids = list(nginx.pids.values())
            pids["nginx"] = nginx.pids

            import uvloop

            t0 = time.perf_counter()
            raw = uvloop.run(_measure(args, _targets(up_port, ports, token), pids))
            figures = _summary(raw, list(ports))
        finally:
            if nginx is not None:
                nginx.stop()
    result = {
        "requests": args.requests,
        "streams": args.streams,
        "concurrency": args.concurrency,
        "sse_chunks": args.sse_chunks,
        "sse_gap_ms": args.sse_gap_ms,
        "baseline": args.baseline,
        "bridge_log_level": args.log_level,
        "figures": figures,
        "nginx_pids": nginx_pids,
        "bridge_over_nginx": _ratios(figures, "nginx"),
        "elapsed_seconds": round(time.perf_counter() - t0, 1),
    }
    return _report(result)


def _report(r: dict[str, Any]) -> int:
    figures = r["figures"]
    names = list(figures)
    rows: list[list[Any]] = []
    labels = {
        "added_p50_ms": "added p50 (ms)",
        "added_p99_ms": "added p99 (ms)",
        "added_ttfb_p50_ms": "added TTFB p50 (ms)",
        "rps": f"req/s at c={r['concurrency']}",
        "per_cpu_second": "req per gateway CPU-second",
        "us_cpu_per_request": "gateway CPU µs per request",
    }
    for kind, what in (("json", "JSON"), ("sse", f"SSE, {r['sse_chunks']} chunks")):
        for key, label in labels.items():
            if kind == "json" and key == "added_ttfb_p50_ms":
                continue
            row = [f"{what}: {label}", *(figures[n][kind][key] for n in names)]
            rows.append([*row, r["bridge_over_nginx"][kind].get(key, "")])
    print(table(["figure", *names, "bridge vs nginx (ms: -, else /)"], rows))
    errors = sum(figures[n][k]["errors"] for n in names for k in ("json", "sse"))
    print(f"errors at saturation: {errors}; elapsed {r['elapsed_seconds']} s")
    print(f"wrote {write_result('nginx_floor', r)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
