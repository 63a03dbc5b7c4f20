"""The change signal between config-service processes sharing one SQLite database file.

PostgreSQL has LISTEN/NOTIFY between replicas (notify.py); SQLite has nothing of the
kind, so the processes on one database file (the workers of `aibridge config-service
--workers N`, or services started by hand on one file) tell each other of a commit with a
datagram. Each binds a Unix datagram socket in Linux's abstract namespace named after the
database file and its pid, `aibridge-sqlite-<16 hex of the path's SHA-256>-<pid>-<random>`
(the random part for several services in one process, as tests run them).
After a write through it commits and its own snapshot is rebuilt, a process sends the new
revision to every other socket of its file listed in /proc/net/unix. A receiver reloads
its snapshot when the revision differs from its own: the payload is a hint, as NOTIFY's
is, never data. A datagram lost (a receiver's buffer full, a process starting up) is
caught by the periodic revision check (AIBRIDGE_RESYNC_INTERVAL), as a missed NOTIFY is.

Why a datagram and not the periodic check at a short interval: a check is a read
transaction per process per interval whether anything changed or not, and it adds half
the interval on average (the whole interval at worst) to a change made through another
worker: the 50 ms p99 bar would need a check every few ms in every worker. Measured
(2026-12-03, SQLite): a revision check as the resync loop makes it costs ≈290 µs of CPU,
so a 10 ms interval is ≈3 % of a core per worker, always, for up to 10 ms of added delay;
`announce` costs ≈32 µs per write (reading /proc/net/unix and one datagram per peer),
and nothing while nothing changes.

Who may signal: the abstract namespace has no file permissions, so any local process can
send to these sockets. A datagram counts only when the kernel's credentials on it
(SO_PASSCRED) name this process's user, and only when it carries a revision: anything
else is dropped, with a warning at most once a minute (no reload, no log flood). Whoever
runs as the service's user can write the database file anyway.

Why the abstract namespace: no file to create or leave behind (a killed process's name
goes with its socket), and no path-length limit (a socket path is at most 107 bytes; a
data directory can be longer). It is Linux's: elsewhere `available()` is False and the
processes catch up through the periodic check only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import socket
import struct
import sys
import time
from pathlib import Path

from sqlalchemy.engine import make_url

from aibridge.logs import get_logger
from config_service.metrics import ConfigMetrics
from config_service.snapshots.hub import SnapshotHub

log = get_logger("aibridge.config.signal")

PREFIX = "aibridge-sqlite-"
_UNIX_SOCKETS = Path("/proc/net/unix")
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid
_REFUSED_LOG_EVERY = 60.0  # seconds between warnings of datagrams dropped


def available() -> bool:
    """Whether this platform has the abstract namespace (Linux)."""
    return sys.platform.startswith("linux")


def group_of(database_url: str) -> str | None:
    """The name prefix shared by every process on this SQLite file; None when the
    database is not a SQLite file (PostgreSQL, or an in-memory database)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = os.path.realpath(Path(url.database).expanduser())
    return f"{PREFIX}{hashlib.sha256(path.encode()).hexdigest()[:16]}-"


class LocalSignal:
    """This process's socket in its database file's group; `announce` after a write,
    `listen` to follow the others' writes."""

    def __init__(self, group: str) -> None:
        self._group = group
        self.name = f"{group}{os.getpid()}-{secrets.token_hex(4)}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.bind("\0" + self.name)
        self._uid = os.geteuid()
        self._refused = 0
        self._refused_logged = -_REFUSED_LOG_EVERY

    def close(self) -> None:
        self._sock.close()

    def peers(self) -> list[str]:
        """The other processes of the group, as their socket names."""
        mine, found = "@" + self.name, []
        with contextlib.suppress(OSError), _UNIX_SOCKETS.open() as table:
            for line in table:
                # Num RefCount Protocol Flags Type St Inode Path ("@" + name when abstract)
                path = line.rsplit(None, 1)[-1]
                if path.startswith("@" + self._group) and path != mine:
                    found.append(path[1:])
        return found

    def announce(self, revision: int) -> None:
        """Tell every other process of the group that `revision` is committed (never raises)."""
        payload = str(revision).encode()
        for peer in self.peers():
            try:
                self._sock.sendto(payload, "\0" + peer)
            except OSError:  # gone meanwhile, or its buffer is full: the periodic check
                continue

    async def listen(self, hub: SnapshotHub, metrics: ConfigMetrics) -> None:
        """Run forever: on each datagram announcing a revision other than the hub's, reload."""
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()
        loop.add_reader(self._sock.fileno(), arrived.set)
        try:
            while True:
                await arrived.wait()
                arrived.clear()
                received = time.perf_counter()
                revision = self._drain()
                # Not only a higher one: after a restore, or a new history started by
                # another worker, the revision announced may be below ours (as with NOTIFY).
                if revision is not None and revision != hub.revision:
                    try:
                        published = await hub.refresh()
                    except Exception as exc:  # the periodic check retries
                        log.warning("reload after a change signal failed", error=str(exc))
                        continue
                    if published:
                        metrics.resyncs.labels(reason="signal").inc()
                        metrics.notification_lag.observe(time.perf_counter() - received)
        finally:
            loop.remove_reader(self._sock.fileno())

    def _drain(self) -> int | None:
        """The highest revision among the datagrams waiting from this process's user (None
        when none is); the others are counted and dropped."""
        highest: int | None = None
        while True:
            try:
                data, ancillary, flags, _addr = self._sock.recvmsg(
                    64, socket.CMSG_SPACE(_UCRED.size)
                )
            except (BlockingIOError, InterruptedError):
                self._log_refused()
                return highest
            ours = self._uid in _senders(ancillary) and not flags & socket.MSG_TRUNC
            revision = _revision(data) if ours else None
            if revision is None:
                self._refused += 1
            else:
                highest = revision if highest is None else max(highest, revision)

    def _log_refused(self) -> None:
        now = time.monotonic()
        if self._refused and now - self._refused_logged >= _REFUSED_LOG_EVERY:
            log.warning(
                "change signals dropped: not from this service's user, or no revision",
                dropped=self._refused,
            )
            self._refused, self._refused_logged = 0, now


def _senders(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The sender's user id as the kernel attached it (SCM_CREDENTIALS), as a list."""
    return [
        _UCRED.unpack(data[: _UCRED.size])[1]
        for level, kind, data in ancillary
        if level == socket.SOL_SOCKET
        and kind == socket.SCM_CREDENTIALS
        and len(data) >= _UCRED.size
    ]


def _revision(data: bytes) -> int | None:
    """The revision a datagram announces: decimal digits only (None for anything else)."""
    return int(data) if 0 < len(data) <= 20 and data.isdigit() else None
