"""Helpers shared by the benchmarks: percentiles, process stats, result files, tables."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# AIBRIDGE_BENCH_RESULTS redirects result files (the smoke test uses a temp dir).
RESULTS = Path(
    os.environ.get("AIBRIDGE_BENCH_RESULTS") or Path(__file__).resolve().parent / "results"
)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's command line, its module docstring (`doc`) as the help text."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def stat_times(stat: str) -> tuple[float, float]:
    """(user, system) seconds from the text of a /proc/.../stat file (a process or a task)."""
    fields = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        return sum(stat_times(f.read()))


def machine() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2))
    return path


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers, *[[f"{c:.2f}" if isinstance(c, float) else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def publish(
    name: str, data: dict[str, Any], table_rows: tuple[list[str], list[list[Any]]], note: str
) -> None:
    """Print the table (headers, rows) and `note`; write `data` as the result file `name`."""
    print(table(*table_rows))
    print(note)
    print(f"wrote {write_result(name, data)}")


@contextlib.contextmanager
def fresh_schema(base: str) -> Iterator[str]:
    """A new PostgreSQL schema in `base` (dropped on exit); yields the URL that uses it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    schema = f"bench_{secrets.token_hex(4)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


ROOT = Path(__file__).resolve().parent.parent
_CALLGRIND_DUMP = r"""
#include <valgrind/callgrind.h>
void dump(const char *label) { CALLGRIND_DUMP_STATS_AT(label); }
"""


def export_tree(rev: str, into: Path) -> Path:
    """The tree of git revision `rev`, exported into `into` (nothing in the repo changes)."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def callgrind_dump_library(tmp: Path) -> Path:
    """A shared library compiled in `tmp` whose `dump(label)` is callgrind's dump client
    request (counters written at that point, named `label`): valgrind's header, cc."""
    src, lib = tmp / "cgdump.c", tmp / "cgdump.so"
    src.write_text(_CALLGRIND_DUMP)
    subprocess.run(["cc", "-O1", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib
