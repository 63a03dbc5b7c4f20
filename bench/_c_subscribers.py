"""WatchProviders subscribers in C (bench/_subscribers.c) for `propagation.py --c-subscribers`.

The program is compiled at run time with gcc against Debian's libnghttp2
(`apt-get install -y libnghttp2-dev`). Each process opens its streams over its HTTP/2
connections (h2c) in one epoll loop; Python builds each stream's gRPC-framed
WatchProvidersRequest and hands it over on the program's stdin with the bearer token
(never on its command line), reads "ready" from its stdout once every stream has its
first snapshot or has ended, closes its stdin to stop it, and reads back every arrival
(stream, snapshot version, CLOCK_MONOTONIC ns: `time.monotonic_ns()`'s clock) and every
stream that ended. The program costs a few µs of CPU per stream per change, so the
figures measure the service rather than the load generator.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from aibridge.config.v1 import config_service_pb2 as cs

SOURCE = Path(__file__).resolve().parent / "_subscribers.c"
HEADER = Path("/usr/include/nghttp2/nghttp2.h")


def missing() -> str | None:
    """Why the C subscribers cannot be built here, or None when they can."""
    if shutil.which("gcc") is None:
        return "gcc is not installed"
    if not HEADER.exists():
        return "libnghttp2-dev is not installed (apt-get install -y libnghttp2-dev)"
    return None


def compile_program(directory: Path) -> Path:
    """bench/_subscribers.c built into `directory`; SystemExit saying what is missing."""
    reason = missing()
    if reason:
        raise SystemExit(f"--c-subscribers: {reason}")
    exe = directory / "subscribers"
    done = subprocess.run(
        ["gcc", "-O2", "-Wall", "-o", str(exe), str(SOURCE), "-lnghttp2"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"--c-subscribers: gcc failed:\n{done.stderr}")
    return exe


def frame(message: bytes) -> bytes:
    """A gRPC message on the wire: not compressed, 4-byte big-endian length, the bytes."""
    return b"\x00" + struct.pack(">I", len(message)) + message


@dataclass
class Ended:
    """A stream the server ended (trailers, RST_STREAM) or whose connection was lost."""

    stream: int
    before_first: bool
    grpc_status: int  # -1: no trailers
    h2_error: int  # -1: the connection was lost


@dataclass
class Outcome:
    """What one process saw, read after it stopped."""

    arrivals: list[list[tuple[int, int]]]  # per stream: (version, t_ns)
    ended: list[Ended] = field(default_factory=list)
    messages: int = 0
    bad_messages: int = 0
    bytes_in: int = 0
    connections_lost: int = 0


def parse(text: str, count: int) -> Outcome:
    """The program's report after "ready" (its A, E and S lines)."""
    out = Outcome([[] for _ in range(count)])
    summary = False
    for line in text.splitlines():
        kind, *values = line.split()
        numbers = [int(v) for v in values]
        if kind == "A":
            out.arrivals[numbers[0]].append((numbers[1], numbers[2]))
        elif kind == "E":
            out.ended.append(Ended(numbers[0], bool(numbers[1]), numbers[2], numbers[3]))
        elif kind == "S":
            out.messages, out.bad_messages, out.bytes_in, out.connections_lost = numbers
            summary = True
    if not summary:
        raise RuntimeError("the C subscribers ended without their summary line")
    return out


class Process:
    """One running program: `requests` (serialized WatchProvidersRequests, one per
    stream) over `connections` HTTP/2 connections to `target`, authenticated with
    `token`."""

    def __init__(
        self, exe: Path, target: str, token: str, requests: list[bytes], connections: int
    ) -> None:
        host, port = target.rsplit(":", 1)
        self.count = len(requests)
        self.proc = subprocess.Popen(
            [str(exe), host, port, str(connections)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.pid = self.proc.pid
        payload = [struct.pack(">I", len(token)), token.encode(), struct.pack(">I", self.count)]
        for request in requests:
            framed = frame(request)
            payload += [struct.pack(">I", len(framed)), framed]
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(payload))
        self.proc.stdin.flush()  # stdin stays open: its end is the stop

    def ready(self) -> tuple[int, int]:
        """(streams with their first snapshot, streams refused or never answered)."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("ready "):
            raise RuntimeError(f"the C subscribers failed to start (exit {self.proc.wait()})")
        opened, refused, pending = (int(v) for v in line.split()[1:])
        return opened, refused + pending

    def stop(self) -> Outcome:
        """Stop the program and read what it saw."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        text = self.proc.stdout.read().decode()
        self.proc.wait(30)
        return parse(text, self.count)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def start(exe: Path, target: str, token: str, counts: list[int], connections: int) -> list[Process]:
    """One program per entry of `counts` (its stream count), `connections` connections each;
    node ids unique per stream as the Python subscribers' are."""
    procs = []
    for k, count in enumerate(counts):
        requests = [
            cs.WatchProvidersRequest(node_id=f"bench-c-{os.getpid()}-{k}-{i}").SerializeToString()
            for i in range(count)
        ]
        procs.append(Process(exe, target, token, requests, connections))
    return procs
