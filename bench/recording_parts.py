"""Where recording's instructions per request go, part by part, in one process under
callgrind (DESIGN §10: recording's cost -<= 3 %).

The bridge's ASGI app driven directly against the bench upstream (as `recording_cost.py`
does), warm, then in turn: --requests requests with recording off, the same number with
recording on (every finished capture submitted to a real `Shipper`'s queue, as deployed,
nothing shipped), then the shipper's work on what was queued, part by part: `_take` as
it is (values, size bound, append, encode: one batch), and over the same captures alone
`Capture.values()`, `Batch.extend` (its size bound and append), and `Batch.encode()`. Callgrind's
counters are dumped between the phases (a client request from a small C helper compiled
at run time), so each phase's instructions are counted apart, in one run:

- request path: (on block - off block) / requests: what recording adds while serving;
- shipper: `_take`'s instructions / requests (the gRPC call, the shipping task's wake-ups
  and the collector's rounds are not here: `bridge_instructions.py` counts them, with the
  HTTP server, as the rest).

    python bench/recording_parts.py [--requests 1000] [--stream] [--form fixed|columns]

`--form`: the batch's encoding, `fixed_columns` (default: what the bridge sends a config
service that reads them) or `columns` (to one from before them).

Needs valgrind (callgrind.h) and a C compiler; `--no-callgrind`: the same phases timed
with `time.perf_counter_ns` (noisy on a shared machine).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import callgrind_dump_library, table, write_result
from recording_cost import _one, against_upstream, bench_app

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from aibridge.collector import tune_collector
from aibridge.masking import Secret
from data_plane.recording.batch import Batch
from data_plane.recording.metrics import RecordingMetrics
from data_plane.recording.shipper import Shipper, ShipperSettings
from data_plane.subscriber import SubscriberConfig

PHASES = ("off", "on", "off2", "discard", "take", "values", "batch", "encode")


def _helper(tmp: Path) -> Callable[[str], None]:
    """callgrind's dump client request, callable from Python."""
    fn = ctypes.CDLL(str(callgrind_dump_library(tmp))).dump
    fn.argtypes = [ctypes.c_char_p]
    return lambda label: fn(label.encode())


class _Discard:
    """A sink that keeps nothing: the request path's recording work alone."""

    def submit(self, record: object) -> None:
        pass


async def _phases(args: argparse.Namespace, port: int, mark: Callable[[str], None]) -> int:
    app, http, scope, body = bench_app(port, args.stream)
    tmp = Path(tempfile.mkdtemp(prefix="aibridge-bench-parts-"))
    settings = ShipperSettings(args.requests * 2, 1.0, tmp / "x.spool", 1 << 20, 5.0)
    connection = SubscriberConfig("127.0.0.1:1", Secret("bench"), "bench")
    shipper = Shipper(settings, connection, RecordingMetrics(CollectorRegistry(), "bench"))
    shipper._fixed = args.form == "fixed"  # as after an answer of a service that reads them
    app.sink = shipper
    for _ in range(200):  # warm-up: connections, caches (the description cached)
        await _one(app, scope, body)
    await shipper._take()
    shipper._unsent.clear()
    shipper._unsent_records = 0
    tune_collector()  # as `aibridge bridge` does once serving
    n = args.requests

    async def block(sink: Shipper | None) -> None:
        app.sink = sink
        for _ in range(n):
            if await _one(app, scope, body) != 200:
                raise SystemExit("a request failed")

    mark("start")
    await block(None)
    mark("off")
    await block(shipper)
    mark("on")
    captures = list(shipper._queue)
    shipper._queue.clear()
    await block(None)
    mark("off2")
    await block(_Discard())  # type: ignore[arg-type]
    mark("discard")
    shipper._queue.extend(captures)
    await shipper._take()
    mark("take")
    if len(shipper._unsent) != 1 or shipper._queue:
        raise SystemExit("the queued records did not make one batch")
    rows = [c.values() for c in captures]
    mark("values")
    batch = Batch()
    batch.extend(rows)
    mark("batch")
    batch.encode(args.form == "fixed")
    mark("encode")
    await http.aclose()
    return len(captures)


def inner(args: argparse.Namespace) -> int:
    if args.no_callgrind:
        times: dict[str, int] = {}
        last = [time.perf_counter_ns()]

        def mark(label: str) -> None:
            now = time.perf_counter_ns()
            times[label] = now - last[0]
            last[0] = now
    else:
        mark = _helper(Path(args.tmp))
    against_upstream(lambda port: _phases(args, port, mark))
    if args.no_callgrind:
        print(" ".join(f"{k}={v}" for k, v in times.items()))
    return 0


def _dumps(out: Path) -> dict[str, int]:
    """Ir per dump label (callgrind names dumps `<out>.<n>`)."""
    counts: dict[str, int] = {}
    for dump in sorted(out.parent.glob(out.name + ".*"), key=lambda p: int(p.suffix[1:])):
        label, ir = "", 0
        for line in dump.read_text().splitlines():
            if line.startswith("desc: Trigger: Client Request: "):
                label = line.rsplit(": ", 1)[1]
            elif line.startswith(("summary:", "totals:")):
                ir = int(line.split()[1])
        counts[label] = ir
    return counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--stream", action="store_true", help="SSE (20 chunks) instead of JSON")
    p.add_argument("--no-callgrind", action="store_true", help="time the phases instead")
    p.add_argument(
        "--form",
        choices=("fixed", "columns"),
        default="fixed",
        help="batch encoding: fixed_columns (to a service that reads them) or columns",
    )
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner or args.no_callgrind:
        return inner(args)
    with tempfile.TemporaryDirectory(prefix="aibridge-bench-parts-") as tmp:
        out = Path(tmp) / "cg.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--trace-children=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--inner",
            f"--tmp={tmp}",
            f"--requests={args.requests}",
            f"--form={args.form}",
            *(["--stream"] if args.stream else []),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run(command, check=True, env=env, stderr=subprocess.DEVNULL)
        ir = _dumps(out)
    n = args.requests
    per: dict[str, Any] = {phase: ir[phase] / n for phase in PHASES}
    request_path = per["on"] - (per["off"] + per["off2"]) / 2
    rows = [
        ["app per request, recording off", round(per["off"])],
        ["app per request, recording on (submitted to the shipper's queue)", round(per["on"])],
        ["recording on the request path (on - mean of the two off blocks)", round(request_path)],
        ["  second off block - first (drift)", round(per["off2"] - per["off"])],
        [
            "  a sink that keeps nothing - mean off",
            round(per["discard"] - (per["off"] + per["off2"]) / 2),
        ],
        ["shipper `_take` per record (values, add, encode)", round(per["take"])],
        ["  Capture.values()", round(per["values"])],
        ["  Batch.extend (size bound, append)", round(per["batch"])],
        ["  Batch.encode (per record)", round(per["encode"])],
        ["request path + `_take`", round(request_path + per["take"])],
    ]
    print(table(["instructions per request", "Ir"], rows))
    path = write_result(
        "recording_parts" + ("_sse" if args.stream else ""),
        {
            "requests": n,
            "stream": args.stream,
            "form": args.form,
            "per_request": per,
            "request_path": request_path,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
