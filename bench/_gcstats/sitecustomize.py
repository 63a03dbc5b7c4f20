"""Loaded (via PYTHONPATH) into every process a benchmark starts: the garbage collector's
work, per generation (collections, seconds inside them, objects collected), with the
process's user and system CPU, written to `$BENCH_GC_STATS/<pid>.json` at most every
0.5 s after a collection and at exit (the argv names the process), with each live
thread's user and system CPU. The recgap
measurements of bench/README.md ("Recording's cycles at saturation").
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import time
from pathlib import Path

_dir = os.environ.get("BENCH_GC_STATS")
if _dir:
    # bench/ last on the path: nothing of the process's own is shadowed.
    sys.path.append(str(Path(__file__).resolve().parent.parent))
    from _common import stat_times

    _out = Path(_dir) / f"{os.getpid()}.json"
    _runs = [0, 0, 0]
    _ns = [0, 0, 0]
    _collected = [0, 0, 0]
    _started = [0]
    _written = [0.0]

    def _write() -> None:
        t = os.times()
        _out.write_text(
            json.dumps(
                {
                    "argv": sys.argv,
                    "collections": _runs,
                    "seconds": [n / 1e9 for n in _ns],
                    "collected": _collected,
                    "user": t.user,
                    "system": t.system,
                    "threshold": gc.get_threshold(),
                    "frozen": gc.get_freeze_count(),
                    "threads": _threads(),
                }
            )
        )

    def _threads() -> dict[str, list[float]]:
        """Each live thread's name, user and system seconds (/proc, clock ticks)."""
        out: dict[str, list[float]] = {}
        for task in Path("/proc/self/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            out[f"{task.name} {name}"] = list(stat_times(stat))
        return out

    def _callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _started[0] = time.perf_counter_ns()
            return
        g = info["generation"]
        _runs[g] += 1
        _ns[g] += time.perf_counter_ns() - _started[0]
        _collected[g] += info["collected"]
        now = time.monotonic()
        if now - _written[0] >= 0.5:
            _written[0] = now
            _write()

    gc.callbacks.append(_callback)
    atexit.register(_write)
