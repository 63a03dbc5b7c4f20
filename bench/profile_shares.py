"""Shares of a py-spy profile by where the time goes (for `propagation.py --profile`;
`--bridge` for a profile of aibridged relaying, e.g. attached during `nginx_floor.py`).

Reads py-spy's raw (collapsed) stacks, drops the samples of threads that only wait (idle
executor workers, epoll waits of the event loop and of grpc's pollers), and prints what
share of the rest falls in each category: the first category whose test matches a stack
wins, in the order listed.

    python bench/profile_shares.py [--bridge] /tmp/profile.txt
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


def _any(names: tuple[str, ...]) -> Test:
    return lambda fr: any(f.startswith(names) for f in fr)


# The bridge's CPU while it relays. Socket system calls are their own rows (py-spy counts a
# thread preempted inside one as busy, so on a loaded machine they read high).
BRIDGE: list[tuple[str, Test]] = [
    ("garbage collector", lambda fr: "gc_collect_main" in fr),
    (
        "socket writes (write/writev: to the client, to the upstream)",
        lambda fr: fr[-1] in {"write", "writev"},
    ),
    ("socket reads", lambda fr: fr[-1] in {"read", "recv"}),
    ("getpid() (asyncio.get_running_loop on 3.11)", lambda fr: fr[-1] == "getpid"),
    (
        "SSE reader (interception/response.py)",
        _any(("ResponseReader.", "marked_lines", "worth_reading")),
    ),
    (
        "per-chunk send path (capture's send wrapper, uvicorn send, direct writer)",
        _any(("Capture.bind.", "RequestResponseCycle.send", "ChunkWriter.")),
    ),
    ("the access log line", _any(("AccessLog.", "BoundLogger", "PrintLogger"))),
    (
        "interception record (capture, build, shipper)",
        _any(("Capture.", "BridgeApp._record", "Shipper.")),
    ),
    (
        "upstream transport (data_plane/transport)",
        _any(("HTTP11Connection.", "ResponseBody.", "UpstreamTransport.")),
    ),
    (
        "metrics (prometheus_client)",
        _any(("MetricWrapperBase.", "MutexValue.", "Gauge.", "Counter.", "Histogram.")),
    ),
    ("forward.py own code", _any(("Forwarder.",))),
    ("app.py own code (auth, body, routing)", _any(("BridgeApp.",))),
    (
        "uvicorn httptools protocol + ASGI plumbing",
        _any(("HttpToolsProtocol.", "GuardedProtocol.", "RequestResponseCycle.", "parser_cb_")),
    ),
    ("event loop, tasks, rest", lambda fr: True),
]


def shares(path: str, categories: list[tuple[str, Test]]) -> tuple[int, int, Counter[str]]:
    total = waiting = 0
    counts: Counter[str] = Counter()
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
            name = next(name for name, test in categories if test(fr))
            counts[name] += samples
    return total, waiting, counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("profile", help="py-spy record --format raw output")
    p.add_argument("--bridge", action="store_true", help="the bridge's categories")
    args = p.parse_args()
    categories = BRIDGE if args.bridge else CATEGORIES
    total, waiting, counts = shares(args.profile, categories)
    busy = max(1, total - waiting)
    print(f"samples: {total}, waiting (left out): {waiting}, busy: {busy}")
    for name, _ in categories:
        print(f"{100 * counts[name] / busy:5.1f} %  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
