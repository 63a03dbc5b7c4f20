"""Where a process's memory is, for a per-stream attribution (branch fanmem).

Three layers, each read in the measured process itself:

- **Python**: what tracemalloc traces (every allocation made through Python's allocators,
  pymalloc and `PyMem_Raw*`), and the gc-tracked objects by type;
- **malloc**: glibc's `mallinfo2()` summed over its arenas: bytes in use (`uordblks` +
  `hblkhd`, Python's large objects included, pymalloc's own arenas not: they are mmapped
  directly) and bytes free but kept (`fordblks`);
- **RSS**: what the kernel counts.

Python minus what it took from malloc, malloc in use minus Python, and RSS minus both are
then read as Python objects, native (grpc-core) and the allocator's share.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import gc
import os
import sys
import tempfile
import tracemalloc
from typing import Any

from _common import rss_mb


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
_libc.mallinfo2.restype = _MallInfo2
_libc.malloc_trim.argtypes = [ctypes.c_size_t]


def heap() -> dict[str, int]:
    """RSS, glibc's heap in use / free, and (while tracing) Python's traced bytes."""
    info = _libc.mallinfo2()
    return {
        "rss": round(rss_mb(os.getpid()) * 1024 * 1024),
        "malloc_in_use": info.uordblks + info.hblkhd,
        "malloc_free": info.fordblks,
        "python": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0,
    }


def malloc_trim() -> None:
    """Give glibc's free pages back to the kernel (every arena)."""
    _libc.malloc_trim(0)


def types_census() -> tuple[collections.Counter[str], collections.Counter[str]]:
    """gc-tracked objects by type name: how many, and their `sys.getsizeof` bytes."""
    counts: collections.Counter[str] = collections.Counter()
    sizes: collections.Counter[str] = collections.Counter()
    for o in gc.get_objects():
        name = type(o).__qualname__
        counts[name] += 1
        sizes[name] += sys.getsizeof(o)
    return counts, sizes


def per_stream(
    before: dict[str, Any], after: dict[str, Any], n: int, top: int = 15
) -> dict[str, Any]:
    """The growth from `before` to `after` (two `census()`), per stream of `n`."""
    kb = {k: round((after["heap"][k] - before["heap"][k]) / n / 1024, 2) for k in after["heap"]}
    out: dict[str, Any] = {"kb_per_stream": kb}
    if "types" in after:
        grown = after["types"][0] - before["types"][0]
        sized = after["types"][1] - before["types"][1]
        out["objects_per_stream"] = {
            t: (round(c / n, 2), round(sized[t] / n)) for t, c in grown.most_common(top)
        }
        out["gc_objects_bytes_per_stream"] = round(sum(sized.values()) / n)
    if "snapshot" in after:
        old, new = (tracemalloc.Snapshot.load(c["snapshot"]) for c in (before, after))
        stats = new.compare_to(old, "lineno")
        out["sites_bytes_per_stream"] = [
            (str(s.traceback[0]), round(s.size_diff / n), round(s.count_diff / n, 2))
            for s in stats[:top]
        ]
    return out


def census(detail: bool) -> dict[str, Any]:
    """`heap()`, and with `detail` a tracemalloc snapshot and the type census."""
    out: dict[str, Any] = {"heap": heap()}
    if detail:
        out["types"] = types_census()
        if tracemalloc.is_tracing():
            # On disk, not held: a held snapshot's traces would count in the next census.
            with tempfile.NamedTemporaryFile(prefix="census-", delete=False) as f:
                out["snapshot"] = f.name
            tracemalloc.take_snapshot().dump(out["snapshot"])
    return out
