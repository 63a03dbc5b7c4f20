"""Shares of a py-spy profile by where the time goes (`propagation.py --profile`; with
`--bridge`, a capture of `aibridge bridge` at saturation, e.g. `py-spy record --native
--format raw -p PID` while `nginx_floor.py` or `workers.py --load c` saturates it).

Reads py-spy's raw (collapsed) stacks, drops the samples of threads that only wait (idle
executor workers, epoll waits of the event loop and of grpc's pollers), and prints what
share of the rest falls in each category: the first category whose test matches a stack
wins, in the order listed.

    python bench/profile_shares.py [--bridge] /tmp/profile.txt

py-spy stops the process to sample it, which over-counts system calls (the socket
`write`s): at saturation the bridge's `/proc` stime is ≈ 16 % of its CPU while ≈ half of
its samples end in a `write`. `--bridge` therefore also prints the shares of the samples
that do not end in a system call, the better picture of where the Python time goes.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Callable

_FRAME = re.compile(r"\s*\(.*\)$")
WAITS = {"epoll_wait", "epoll_pwait", "pthread_cond_wait", "pthread_cond_timedwait"}


def frames(stack: str) -> list[str]:
    return [_FRAME.sub("", f) for f in stack.split(";")]


def idle(fr: list[str]) -> bool:
    """A thread waiting for work: no CPU spent, not part of the fan-out's cost."""
    if fr[-1] in WAITS:
        return True
    return "PyThread_acquire_lock_timed" in fr or "_queue_SimpleQueue_get" in fr[-4:]


Test = Callable[[list[str]], bool]
CATEGORIES: list[tuple[str, Test]] = [
    ("garbage collector", lambda fr: "gc_collect_main" in fr),
    ("getpid() (asyncio.Event.wait → get_running_loop)", lambda fr: fr[-1] == "getpid"),
    (
        "completion-queue wake-ups (poller thread write() + loop recv(1))",
        lambda fr: (
            (fr[-1] in {"write", "eventfd_write"} and "Thread.run" in fr) or fr[-1] == "recv"
        ),
    ),
    ("socket I/O of the streams (sendmsg/recvmsg)", lambda fr: fr[-1] in {"sendmsg", "recvmsg"}),
    (
        "database write + snapshot rebuild",
        lambda fr: any(f in {"_Commit.run", "_WorkItem.run", "fdatasync"} for f in fr),
    ),
    (
        "the watch loop (ConfigServicer.watch, SnapshotHub)",
        lambda fr: any(f.startswith(("ConfigServicer.watch", "SnapshotHub.")) for f in fr[-3:]),
    ),
    ("rest of the event loop (grpc aio, asyncio, uvloop)", lambda fr: "uv_run" in fr),
    ("rest of grpc core threads", lambda fr: True),
]


SYSCALLS = {"write", "writev", "read", "readv", "recv", "recvfrom", "send", "sendmsg", "recvmsg"}


def _own(raw: list[str], name: str) -> bool:
    """The deepest frame of the bridge's code (data_plane/) is in module `name`."""
    ours = [f for f in raw if "data_plane/" in f]
    return bool(ours) and f"data_plane/bridge/{name}:" in ours[-1]


def _ends_in_write(fr: list[str]) -> bool:
    return fr[-1] in {"write", "writev"}


# Tests on (names, raw frames); a stack counted in the first that matches.
BRIDGE: list[tuple[str, Callable[[list[str], list[str]], bool]]] = [
    ("garbage collector", lambda fr, raw: "gc_collect_main" in fr),
    (
        "the access log line (aibridge/logs.py, structlog, its write)",
        lambda fr, raw: any("aibridge/logs.py" in f or "structlog/" in f for f in raw),
    ),
    (
        "socket writes to the client (uvicorn send → write)",
        lambda fr, raw: (
            _ends_in_write(fr)
            and ("RequestResponseCycle.send" in fr or any(f.startswith("ChunkWriter.") for f in fr))
        ),
    ),
    (
        "socket writes to the upstream (transport → writev)",
        lambda fr, raw: _ends_in_write(fr) and any("data_plane/transport/" in f for f in raw),
    ),
    (
        "upstream transport (data_plane/transport), the rest",
        lambda fr, raw: any("data_plane/transport/" in f for f in raw),
    ),
    ("uvicorn send, the rest (framing)", lambda fr, raw: "RequestResponseCycle.send" in fr),
    (
        "SSE relay straight to the client (ChunkWriter)",
        lambda fr, raw: any(f.startswith("ChunkWriter.") for f in fr),
    ),
    (
        "SSE reader (interception/response.py)",
        lambda fr, raw: any("data_plane/bridge/interception/response.py" in f for f in raw),
    ),
    (
        "interception record (capture, build, sink, shipper)",
        lambda fr, raw: any(
            "data_plane/bridge/interception/" in f
            or "data_plane/recording/" in f
            or "aibridge/recording.py" in f
            for f in raw
        ),
    ),
    ("metrics (prometheus_client)", lambda fr, raw: any("prometheus_client/" in f for f in raw)),
    ("request body JSON parse (BridgeApp._inspect)", lambda fr, raw: "BridgeApp._inspect" in fr),
    ("forward.py own code", lambda fr, raw: _own(raw, "forward.py")),
    ("app.py own code (auth, body, routing)", lambda fr, raw: _own(raw, "app.py")),
    (
        "HTTP server: uvicorn httptools protocol, ASGI plumbing, connections.py",
        lambda fr, raw: any(
            "uvicorn/" in f or "data_plane/bridge/connections.py" in f for f in raw
        ),
    ),
    ("event loop, tasks, rest", lambda fr, raw: True),
]


def shares(path: str, bridge: bool = False) -> tuple[int, int, Counter[str], Counter[str]]:
    """(samples, waiting samples, counts by category, counts of those not ending in a
    system call)."""
    total = waiting = 0
    counts: Counter[str] = Counter()
    user: Counter[str] = Counter()
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            samples = int(n)
            total += samples
            fr = frames(stack)
            if idle(fr):
                waiting += samples
                continue
            if bridge:
                raw = stack.split(";")
                name = next(name for name, test in BRIDGE if test(fr, raw))
            else:
                name = next(name for name, test in CATEGORIES if test(fr))
            counts[name] += samples
            if fr[-1] not in SYSCALLS:
                user[name] += samples
    return total, waiting, counts, user


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("profile", help="py-spy record --format raw output")
    p.add_argument("--bridge", action="store_true", help="the bridge's categories")
    args = p.parse_args()
    total, waiting, counts, user = shares(args.profile, args.bridge)
    busy = max(1, total - waiting)
    print(f"samples: {total}, waiting (left out): {waiting}, busy: {busy}")
    if not args.bridge:
        for name, _ in CATEGORIES:
            print(f"{100 * counts[name] / busy:5.1f} %  {name}")
        return 0
    busy_user = max(1, sum(user.values()))
    print(f"not ending in a system call: {busy_user}")
    print("  all | no syscall | category")
    for name, _ in BRIDGE:
        print(f"{100 * counts[name] / busy:5.1f} | {100 * user[name] / busy_user:5.1f} | {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
