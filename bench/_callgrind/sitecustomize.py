"""Loaded (via PYTHONPATH) into a service that `fanout_instructions.py` runs under callgrind.

SIGUSR2 dumps callgrind's counters (and zeroes them) with the label written to the file
named by `BENCH_CG_LABEL`, through callgrind's client request in the small C helper named
by `BENCH_CG_HELPER` (compiled by the benchmark), then writes the label to that file's
`.done` twin, so the benchmark knows the dump is on disk.
"""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path
from typing import Any

_dump = ctypes.CDLL(os.environ["BENCH_CG_HELPER"]).dump
_dump.argtypes = [ctypes.c_char_p]


def _take(signum: int, frame: Any) -> None:
    asked = Path(os.environ["BENCH_CG_LABEL"])
    label = asked.read_text()
    _dump(label.encode())
    asked.with_suffix(".done").write_text(label)


signal.signal(signal.SIGUSR2, _take)
