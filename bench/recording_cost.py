"""Recording's CPU cost per request, in process: the bridge's ASGI app driven directly
(no HTTP server, no client sockets), the fake upstream in its own process, the same app
with recording on (a sink that encodes columnar batches and counts) and off, in alternating
blocks.

On a shared machine the saturation figures of `bridge_overhead.py --record` swing by more
than the few per cent recording costs; CPU seconds of this one process, A/B in
alternating blocks of the same warm app, swing less. The figures are the difference in
CPU microseconds per request (on - off) and that difference as a share of the app's own
CPU per request in the same run: an upper bound for recording's share of the bridge
process, which also spends CPU on the HTTP server side (DESIGN §10: throughput -<= 3 %).
A loaded machine stretches both the same way, so the share is the figure to read.

    python bench/recording_cost.py [--requests 5000] [--blocks 6] [--stream]

Instruction counts (repeatable where CPU time is not): the same requests with recording
only on, then only off, each under callgrind; (on - off) / requests is recording's cost:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python bench/recording_cost.py --only on --requests 1000 --blocks 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, MutableMapping
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, table, write_result
from _recording_bridge import CountingSink
from _stack import UPSTREAM_KEY, start_upstream

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import provider_pb2 as pb
from aibridge.config.v1 import token_pb2
from aibridge.logs import configure
from aibridge.masking import sha256_hex
from data_plane.body_budget import BodyBudget
from data_plane.bridge.app import BridgeApp
from data_plane.bridge.asgi import LOST, ConnectionLost
from data_plane.bridge.routing import EMPTY, BuildContext, build_table
from data_plane.bridge.server import make_http_client, make_upstream
from data_plane.bridge.settings import BreakerSettings

TOKEN = "aib_bench_member_0123456789abcdefghijklmnopqrstuvwxyzABCD"  # noqa: S105 - bench only
GOAL_PCT = 3.0
T = TypeVar("T")


def _snapshot(port: int) -> cs.ProviderSnapshot:
    return cs.ProviderSnapshot(
        version="1",
        providers=[
            pb.Provider(
                id="p1",
                name="fake",
                type=pb.PROVIDER_TYPE_OPENAI,
                base_url=f"http://127.0.0.1:{port}/v1/",
                status=pb.PROVIDER_STATUS_ENABLED,
                keys=[pb.ProviderKey(id="k1", secret=UPSTREAM_KEY)],
                key_count=1,
            )
        ],
        gateway_tokens=[
            token_pb2.GatewayToken(
                token_id="0190c8f0-0000-7000-8000-000000000001",  # noqa: S106 - an id
                sha256=sha256_hex(TOKEN),
                principal_id="0190c8f0-0000-7000-8000-000000000002",
                principal_name="bench-user",
                role=token_pb2.ROLE_MEMBER,
            )
        ],
        scope=cs.SNAPSHOT_SCOPE_BRIDGE,
    )


def _body(stream: bool) -> bytes:
    doc: dict[str, Any] = {
        "model": "gpt-bench",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
            {"role": "user", "content": "Write one sentence about an AI gateway. " * 4},
        ],
        "stream": stream,
    }
    if stream:
        doc["stream_options"] = {"include_usage": True}
    return json.dumps(doc, separators=(",", ":")).encode()


async def _one(app: BridgeApp, scope: dict[str, Any], body: bytes) -> int:
    sent = False
    status = 0
    finished = asyncio.Event()

    async def receive() -> MutableMapping[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif not message.get("more_body", False):
            finished.set()

    # A scope as the bridge's HTTP protocol makes it, with its connection-lost hook.
    await app({**scope, "extensions": {LOST: ConnectionLost()}}, receive, send)
    return status


def bench_app(port: int, stream: bool) -> tuple[BridgeApp, Any, dict[str, Any], bytes]:
    """The bridge's app on the bench snapshot (its upstream at `port`), its HTTP client,
    and the scope and body of the bench's request (JSON, or SSE with `stream`)."""
    upstream = make_upstream()
    http = make_http_client(upstream)
    app = BridgeApp(http=http, upstream=upstream, body_budget=BodyBudget(128 * 1024 * 1024, 30.0))
    context = BuildContext(
        allow_byok=True, breaker=BreakerSettings(False, 5, 10.0, 30.0, 3), http=http
    )
    app.table, _ = build_table(_snapshot(port), EMPTY, context)
    body = _body(stream)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/fake/v1/chat/completions",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"content-type", b"application/json"),
            (b"authorization", b"Bearer " + TOKEN.encode()),
            (b"user-agent", b"OpenAI/Python 1.99.9"),
            (b"x-stainless-lang", b"python"),
            (b"x-stainless-package-version", b"1.99.9"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return app, http, scope, body


async def _measure(args: argparse.Namespace, port: int) -> dict[str, Any]:
    app, http, scope, body = bench_app(port, args.stream)
    sink = CountingSink()
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(200):  # warm-up: connections, caches
        await _one(app, scope, body)
    for block in range(args.blocks * (1 if args.only else 2)):
        mode = args.only or ("off", "on")[(block + block // 2) % 2]  # off on on off off on ...
        app.sink = sink if mode == "on" else None
        t0 = time.process_time()
        for _ in range(args.requests):
            if await _one(app, scope, body) != 200:
                raise SystemExit("a request failed")
        sink.drain()
        cpu[mode].append((time.process_time() - t0) / args.requests * 1e6)
    await http.aclose()
    return {"cpu_us": cpu, "records": sink.records}


def against_upstream(run: Callable[[int], Coroutine[Any, Any, T]]) -> T:
    """`run(port)` on uvloop, the bench upstream listening at `port` meanwhile. The bridge
    logs every request (JSON, info), as deployed; here into a file nobody reads."""
    logs = tempfile.TemporaryFile("w")  # noqa: SIM115 - open for the whole run
    real_stderr, sys.stderr = sys.stderr, logs
    configure("info", "json")
    upstream, port = start_upstream()
    try:
        import uvloop

        return uvloop.run(run(port))
    finally:
        upstream.terminate()
        upstream.wait(10)
        sys.stderr = real_stderr
        logs.close()


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--requests", type=int, default=5000, help="requests per block")
    p.add_argument("--blocks", type=int, default=6, help="blocks of each mode")
    p.add_argument("--stream", action="store_true", help="SSE (20 chunks) instead of JSON")
    p.add_argument(
        "--only",
        choices=("on", "off"),
        help="one mode only: two runs under callgrind give instructions per request",
    )
    args = p.parse_args()
    result = against_upstream(lambda port: _measure(args, port))
    if args.only:
        print(f"{args.only}: {[round(x, 1) for x in result['cpu_us'][args.only]]} us")
        return 0
    off, on = result["cpu_us"]["off"], result["cpu_us"]["on"]
    diff = statistics.median(on) - statistics.median(off)
    share = 100 * diff / statistics.median(off)
    rows = [
        [
            "app CPU per request, recording off (us, median of blocks)",
            round(statistics.median(off), 1),
            "-",
            "",
        ],
        [
            "app CPU per request, recording on (us, median of blocks)",
            round(statistics.median(on), 1),
            "-",
            "",
        ],
        ["recording's CPU per request (us)", round(diff, 2), "-", ""],
        [
            "  as a share of the app's CPU per request (%, upper bound for the bridge)",
            round(share, 2),
            f"<= {GOAL_PCT:g}",
            "yes" if share <= GOAL_PCT else "NO",
        ],
        ["records built", result["records"], "-", ""],
    ]
    print(table(["metric", "measured", "goal", "met"], rows))
    print(f"blocks off: {[round(x, 1) for x in off]}; on: {[round(x, 1) for x in on]}")
    doc = {
        "stream": args.stream,
        "requests_per_block": args.requests,
        **result,
        "diff_us": diff,
        "share_pct": share,
    }
    print(f"wrote {write_result('recording_cost' + ('_sse' if args.stream else ''), doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
