"""OpenTelemetry cost: the bridge with OTel off and on (every trace sampled), in one run.

One fake upstream, one config service, and two bridges following it: `off` (no OTEL_*
set, as today) and `on` (OTEL_EXPORTER_OTLP_ENDPOINT to a local OTLP receiver, gRPC,
`OTEL_TRACES_SAMPLER=always_on`, metrics exported every second). The receiver is its own
process (a grpc TraceService/MetricsService counting what it is sent), so its CPU is
not the bridge's. Phases, all from this one load generator:

1. warm-up of both bridges;
2. latency: sequential requests direct, through `off` and through `on`, interleaved (order
   alternating each round), non-streaming and SSE: added = bridge percentile - direct;
3. saturation: `--concurrency` connections on each bridge in turn (non-streaming):
   req/s and req/s per bridge CPU-second;
4. the spans the receiver got (one SERVER + one CLIENT span a request when on).

`off` must be within noise of bench/bridge_overhead.py's figures: the off path creates no
span and imports nothing of OpenTelemetry. On a shared 2-core machine read the
differences between `off` and `on` measured in the same run.

    python bench/otel.py [--requests 20000] [--concurrency 32] [--ratio 0.1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, percentile, publish
from _stack import Proc, bridge_env, free_port, serve_bridge, stack, start
from bridge_overhead import _saturate, _sequential, bridge_target, direct_target


def serve_receiver() -> None:
    """An OTLP receiver (gRPC) that counts spans and metric exports; prints its port."""
    import asyncio

    import grpc
    from opentelemetry.proto.collector.metrics.v1 import (
        metrics_service_pb2,
        metrics_service_pb2_grpc,
    )
    from opentelemetry.proto.collector.trace.v1 import (
        trace_service_pb2,
        trace_service_pb2_grpc,
    )

    counts = {"spans": 0, "metric_exports": 0}

    class Traces(trace_service_pb2_grpc.TraceServiceServicer):
        async def Export(self, request: Any, context: Any) -> Any:  # type: ignore[override]
            counts["spans"] += sum(
                len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans
            )
            return trace_service_pb2.ExportTraceServiceResponse()

    class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
        async def Export(self, request: Any, context: Any) -> Any:  # type: ignore[override]
            counts["metric_exports"] += 1
            return metrics_service_pb2.ExportMetricsServiceResponse()

    async def main() -> None:
        server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(port, flush=True)
        loop = asyncio.get_running_loop()
        # Each line on stdin asks for the counts so far.
        while await loop.run_in_executor(None, sys.stdin.readline):
            print(f"{counts['spans']} {counts['metric_exports']}", flush=True)
        await server.stop(None)

    asyncio.run(main())


class Receiver:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-receiver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.proc.kill()
            raise SystemExit("OTLP receiver did not start")
        self.port = int(line)

    def counts(self) -> tuple[int, int]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        spans, exports = self.proc.stdout.readline().split()
        return int(spans), int(exports)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--requests", type=int, default=20_000, help="requests per bridge in all")
    p.add_argument("--concurrency", type=int, default=32, help="in-flight at saturation")
    p.add_argument("--rounds", type=int, default=None, help="latency rounds (default N/10)")
    p.add_argument(
        "--ratio",
        type=float,
        default=None,
        help="sample this share of traces (parentbased_traceidratio) instead of every one",
    )
    p.add_argument("--serve-receiver", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_receiver:
        serve_receiver()
        return 0
    rounds = args.rounds if args.rounds is not None else max(5, min(2000, args.requests // 10))
    warmup = max(10, min(500, args.requests // 20))
    saturation = max(10, args.requests - warmup - 2 * rounds)

    with stack(prefix="aibridge-bench-otel-") as s:
        receiver = Receiver()
        try:
            ports = {"off": free_port(), "on": free_port()}
            otel = {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_TRACES_SAMPLER": "always_on" if args.ratio is None else "traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "1" if args.ratio is None else str(args.ratio),
                "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            }
            bridges = {}
            for name, port in ports.items():
                env = bridge_env(s.target, port, s.tmp / f"bridge-{name}")
                env["AIBRIDGE_NODE_ID"] = f"bench-otel-{name}"
                if name == "on":
                    env.update(otel)
                bridges[name] = serve_bridge(s.add(start("bridge", ["bridge"], env, s.tmp)), port)
            result = _run(
                rounds, warmup, saturation, args.concurrency, s.up_port, ports, s.token, bridges
            )
            s.stop_daemons()  # a bridge's shutdown flushes its last spans
            spans, exports = receiver.counts()
            result["receiver"] = {"spans": spans, "metric_exports": exports}
            result["sampled"] = 1.0 if args.ratio is None else args.ratio
        finally:
            s.stop_daemons()
            receiver.stop()
    return _report(result)


def _run(
    rounds: int,
    warmup: int,
    saturation: int,
    concurrency: int,
    up_port: int,
    ports: dict[str, int],
    token: str,
    bridges: dict[str, Proc],
) -> dict[str, Any]:
    import uvloop

    direct = direct_target(up_port)
    targets = {name: bridge_target(name, port, token) for name, port in ports.items()}
    pids = {name: proc.pid for name, proc in bridges.items()}

    async def run() -> dict[str, Any]:
        for t in targets.values():
            warm = await _saturate(t, "json", warmup, 8, pids, None)
            if warm.errors:
                raise RuntimeError(f"warm-up {t.name}: {warm.errors} errors")
        seq = await _sequential([direct, targets["off"], targets["on"]], rounds)
        sat = {}
        for name in ("off", "on", "off", "on"):  # twice each, alternating: drift shows
            s = await _saturate(targets[name], "json", saturation // 2, concurrency, pids, None)
            sat.setdefault(name, []).append(s)
        return {"seq": seq, "sat": sat}

    raw = uvloop.run(run())

    def ms(values: list[float], q: float) -> float:
        return percentile([v * 1000 for v in values], q)

    latency: dict[str, Any] = {}
    for kind in ("json", "sse"):
        d = raw["seq"][("direct", kind)]
        entry: dict[str, Any] = {"direct_p50_ms": ms(d.total, 50), "direct_p99_ms": ms(d.total, 99)}
        for name in ("off", "on"):
            b = raw["seq"][(name, kind)]
            for q in (50, 99):
                entry[f"{name}_added_p{q}_ms"] = ms(b.total, q) - ms(d.total, q)
                entry[f"{name}_added_ttfb_p{q}_ms"] = ms(b.ttfb, q) - ms(d.ttfb, q)
        latency[kind] = entry
    throughput: dict[str, Any] = {}
    for name, runs in raw["sat"].items():
        requests = sum(s.requests for s in runs)
        seconds = sum(s.seconds for s in runs)
        cpu = sum(s.cpu.get(name, 0.0) for s in runs)
        throughput[name] = {
            "requests": requests,
            "errors": sum(s.errors for s in runs),
            "rps": round(requests / seconds, 1) if seconds else None,
            "rps_per_bridge_cpu_second": round(requests / cpu, 1) if cpu > 0.05 else None,
            "bridge_cpu_seconds": round(cpu, 2),
        }
    return {
        "rounds": rounds,
        "warmup": warmup,
        "concurrency": concurrency,
        "latency": latency,
        "saturation": throughput,
        "bridge_requests": {name: warmup + 2 * rounds + saturation for name in ports},
    }


def _report(r: dict[str, Any]) -> int:
    lat, sat = r["latency"], r["saturation"]
    rows: list[list[Any]] = []
    for kind, label in (("json", "non-streaming"), ("sse", "SSE whole stream")):
        for q in (50, 99):
            off, on = lat[kind][f"off_added_p{q}_ms"], lat[kind][f"on_added_p{q}_ms"]
            rows.append(
                [f"added latency p{q}, {label} (ms)", f"{off:.3f}", f"{on:.3f}", f"{on - off:+.3f}"]
            )
    for q in (50, 99):
        off, on = lat["sse"][f"off_added_ttfb_p{q}_ms"], lat["sse"][f"on_added_ttfb_p{q}_ms"]
        rows.append([f"added TTFB p{q}, SSE (ms)", f"{off:.3f}", f"{on:.3f}", f"{on - off:+.3f}"])
    off_s, on_s = sat["off"], sat["on"]
    rows.append([f"throughput, c={r['concurrency']} (req/s)", off_s["rps"], on_s["rps"], ""])
    rows.append(
        [
            "  per bridge CPU-second (req/s)",
            off_s["rps_per_bridge_cpu_second"],
            on_s["rps_per_bridge_cpu_second"],
            "",
        ]
    )
    rows.append(["errors at saturation", off_s["errors"], on_s["errors"], ""])
    on = f"OTel on ({r['sampled']:.0%} sampled)"
    received = r["receiver"]
    note = (
        f"receiver: {received['spans']} spans, {received['metric_exports']} metric exports "
        f"for {r['bridge_requests']['on']} requests through the `on` bridge"
    )
    publish("otel", r, (["metric", "OTel off", on, "on - off"], rows), note)
    return 1 if off_s["errors"] or on_s["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
