"""Loaded (via PYTHONPATH) into a benchmark's service process by `propagation.py --attribute`.

Traces Python allocations from start-up; each SIGUSR1 takes a `bench/_memory.census`: the
first is the idle state, every later one writes the growth since then, per open stream
(`AIBRIDGE_BENCH_CENSUS_STREAMS`, read from the file named by `..._CENSUS_COUNT`), as JSON
to the file named by `BENCH_CENSUS_OUT`. `BENCH_CENSUS_TRACE=0`: no tracemalloc (the heap
layers and the type census only, as the service runs untraced: tracemalloc's own traces and
snapshots move malloc's free share).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _memory import census, per_stream

if os.environ.get("BENCH_CENSUS_TRACE", "1") != "0":
    tracemalloc.start()
_idle: list[dict[str, Any]] = []


def _take(signum: int, frame: Any) -> None:
    out = Path(os.environ["BENCH_CENSUS_OUT"])
    now = census(True)
    if not _idle:
        _idle.append(now)
        out.with_suffix(".idle").write_text("")
        return
    n = int(out.with_suffix(".count").read_text())
    out.write_text(json.dumps(per_stream(_idle[0], now, n, top=25)))


signal.signal(signal.SIGUSR1, _take)
