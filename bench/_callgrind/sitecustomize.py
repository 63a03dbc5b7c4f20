"""Loaded (via PYTHONPATH) into a service that `fanout_instructions.py` runs under callgrind.

SIGUSR2 dumps callgrind's counters (and zeroes them) with the label written to the file
named by `BENCH_CG_LABEL`, through callgrind's client request in the small C helper named
by `BENCH_CG_HELPER` (compiled by the benchmark; outside valgrind the request does
nothing), then writes the label to that file's `.done` twin, so the benchmark knows the
dump is on disk. With `BENCH_CG_CALLS` set (`--calls`, run without valgrind) every
Python-level call in every thread is counted (`sys.setprofile`: Python functions, and
the C functions Python code calls), and each dump also writes the counts since the last
one to `<label file>.<label>.calls.json`.
"""

from __future__ import annotations

import collections
import ctypes
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

_dump = ctypes.CDLL(os.environ["BENCH_CG_HELPER"]).dump
_dump.argtypes = [ctypes.c_char_p]
_calls: collections.Counter[str] = collections.Counter()


def _count(frame: Any, event: str, arg: Any) -> None:
    if event == "call":
        code = frame.f_code
        _calls[f"{code.co_filename}:{code.co_firstlineno}:{code.co_qualname}"] += 1
    elif event == "c_call":
        _calls[f"C:{getattr(arg, '__module__', None)}.{getattr(arg, '__qualname__', arg)}"] += 1


def _take(signum: int, frame: Any) -> None:
    asked = Path(os.environ["BENCH_CG_LABEL"])
    label = asked.read_text()
    _dump(label.encode())
    if os.environ.get("BENCH_CG_CALLS"):
        counts = dict(_calls)
        _calls.clear()
        Path(f"{asked}.{label}.calls.json").write_text(json.dumps(counts))
    asked.with_suffix(".done").write_text(label)


signal.signal(signal.SIGUSR2, _take)
if os.environ.get("BENCH_CG_CALLS"):
    sys.setprofile(_count)
    threading.setprofile(_count)
