"""`--workers N`: one daemon as N processes on one port, supervised.

The bridge, the proxy and the config service all run this way (each describes itself as a
`Daemon`). The parent binds the listen address first, with SO_REUSEPORT, and never listens
on it: it holds the port (a taken port fails before anything starts, and a restarted
worker can always bind it again). It runs the daemon's `prepare` (the proxy creates its
CA there; the config service migrates and seeds its database), so workers never race to
do it twice, then starts N workers, each a fresh interpreter given its settings over a
pipe, which bind the same port with SO_REUSEPORT and listen once they are ready to serve
(the data plane: once they hold a snapshot, `Worker.first_snapshot`); the kernel spreads
new connections over the listening workers.

Each worker is a whole daemon under its own name: `settings.for_worker("-w<i>", port)`
gives it (the data plane's node id, the config service's replica id, + `-w0`, `-w1`, ...).
Why each data-plane worker follows the config service itself, and how config-service
workers stay in step, is said in data_plane/follow.py and config_service/local_signal.py.

Metrics: the parent owns a private directory for prometheus-client's multiprocess
files (see aibridge/worker_metrics.py), removed when it exits; /metrics on any worker
shows every worker's series. The parent holds a lock on a file in it while it lives: a
parent that could not remove its directory (SIGKILL) leaves one nobody locks, which the
next parent of the same user removes (a lock, not a pid: pids are reused, and differ
between pid namespaces sharing one /tmp).

Supervision: a worker that dies is started again after a backoff (0.25 s doubling to
30 s; back to 0.25 s once a worker has lived a minute), each death logged with its exit
status. A worker that fails its start-up (exit 2 after its one-line error) before any
worker was ever ready ends the daemon with 2: starting it again would repeat the error.
SIGTERM or SIGINT to the parent is passed on as SIGTERM to every worker, which drains as
a single daemon does; the parent waits for them (SIGKILL after DRAIN_TIMEOUT), removes
its directory and exits 0. Workers ask the kernel for SIGTERM when the parent dies
(PR_SET_PDEATHSIG), so even a SIGKILLed parent leaves no worker behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import pickle
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

from aibridge.logs import configure, get_logger
from aibridge.ports import ListenError, address, bind_tcp
from aibridge.worker_metrics import WorkerIdentity

log = get_logger(__name__)

RESTART_MIN = 0.25
RESTART_MAX = 30.0
STABLE_AFTER = 60.0  # a worker that lived this long resets the backoff
DRAIN_TIMEOUT = 15.0  # uvicorn drains for 10 s; then a worker is killed
FIRST_SNAPSHOT_WAIT = 5.0  # a worker listens once it has a snapshot, or after this
METRICS_PREFIX = "aibridge-workers-"
_METRICS_LOCK = ".lock"
_ENTRY = "from aibridge.workers import worker_main; raise SystemExit(worker_main())"
_PR_SET_PDEATHSIG = 1


class Supervised(Protocol):
    """What the supervisor reads of a daemon's settings."""

    @property
    def workers(self) -> int: ...  # processes on the listen port
    @property
    def listen_host(self) -> str: ...
    @property
    def listen_port(self) -> int: ...
    @property
    def instance(self) -> str: ...  # the name it reports itself by (node or replica id)
    @property
    def log_level(self) -> str: ...
    @property
    def log_format(self) -> str: ...

    def for_worker(self, suffix: str, port: int) -> Self:
        """These settings as one worker runs them: on the shared `port`, its own name
        ending in `suffix`, one process."""
        ...


S = TypeVar("S", bound=Supervised)


@dataclass(frozen=True)
class Daemon:
    """How to run one daemon: its name, its `serve(settings, worker)` (worker None: the
    only process), its listen setting and the exceptions that are start-up errors (a
    message, never a traceback)."""

    prog: str
    serve: Callable[[Any, Worker | None], Coroutine[Any, Any, None]]
    listen_setting: str
    fatal: tuple[type[Exception], ...] = ()
    # With several workers, run once in the parent before any worker starts: what the
    # workers would otherwise race to create (the proxy's CA, the config service's schema).
    prepare: Callable[[Any], None] | None = None


def launch(daemon: Daemon, settings: Supervised) -> int:
    """Run the daemon in this process, or as `settings.workers` supervised workers."""
    if settings.workers > 1:
        return supervise(daemon, settings)
    return run(daemon.prog, daemon.serve(settings, None), *daemon.fatal)


def run(prog: str, coro: Coroutine[Any, Any, None], *fatal: type[Exception]) -> int:
    """Serve on uvloop until SIGINT/SIGTERM: 0, or 2 after one line for a start-up error.

    A port that cannot be bound (`ListenError`) and the exceptions in `fatal` are
    start-up errors the user can fix: their message is printed, never a traceback.
    """
    import uvloop

    startup_errors: tuple[type[Exception], ...] = (ListenError, *fatal)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(coro)
    except startup_errors as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    return 0


@dataclass(frozen=True)
class Worker:
    """What a worker process knows of its place among the workers."""

    identity: WorkerIdentity
    parent_pid: int
    ready_fd: int

    async def first_snapshot(self, applied: asyncio.Event) -> None:
        """Until the subscriber has applied a snapshot (`applied`), FIRST_SNAPSHOT_WAIT at most.

        Called between binding and listening: a worker listening earlier would answer 503
        (no snapshot yet) on connections the kernel hands it while its siblings could
        serve them. Past the wait it listens anyway, as a single daemon does (/readyz 503
        until a snapshot arrives).
        """
        try:
            await asyncio.wait_for(applied.wait(), FIRST_SNAPSHOT_WAIT)
        except TimeoutError:
            log.warning("no snapshot yet; listening anyway", waited=FIRST_SNAPSHOT_WAIT)

    def ready(self) -> None:
        """Tell the parent this worker serves (called once, after it listens)."""
        with contextlib.suppress(OSError):
            os.write(self.ready_fd, b"r")
            os.close(self.ready_fd)


@dataclass(frozen=True)
class _Job:
    daemon: Daemon
    settings: Any
    worker: Worker


def worker_main() -> int:
    """A worker process: read its job from stdin, serve until SIGTERM."""
    job: _Job = pickle.load(sys.stdin.buffer)  # noqa: S301 - written by our parent
    _die_with_parent(job.worker.parent_pid)
    configure(job.settings.log_level, job.settings.log_format)
    daemon = job.daemon
    return run(daemon.prog, daemon.serve(job.settings, job.worker), *daemon.fatal)


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        raise SystemExit(0)


def supervise(daemon: Daemon, settings: S) -> int:
    """Run `settings.workers` workers of `daemon` until SIGTERM/SIGINT; the exit status."""
    try:
        holder = bind_tcp(
            daemon.listen_setting, settings.listen_host, settings.listen_port, reuse_port=True
        )
    except ListenError as exc:
        print(f"{daemon.prog}: {exc}", file=sys.stderr)
        return 2
    try:
        if daemon.prepare is not None:
            daemon.prepare(settings)
    except daemon.fatal as exc:
        holder.close()
        print(f"{daemon.prog}: {exc}", file=sys.stderr)
        return 2
    _remove_abandoned_metrics()
    metrics_dir = Path(tempfile.mkdtemp(prefix=METRICS_PREFIX))  # mode 0700
    # Locked before it has the name a sweeping parent opens; held while this one lives.
    lock = os.open(metrics_dir / "lock.new", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    os.rename(metrics_dir / "lock.new", metrics_dir / _METRICS_LOCK)
    try:
        supervisor = _Supervisor(daemon, settings, holder.getsockname()[1], metrics_dir)
        return asyncio.run(supervisor.run())
    finally:
        holder.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        os.close(lock)


def _remove_abandoned_metrics() -> None:
    """Remove the metrics directories of this user's parents that died without removing
    theirs: a directory whose lock file nobody holds. Another user's, a symlink, one
    without a lock file (it is being made, or not ours) are left alone."""
    try:
        candidates = list(Path(tempfile.gettempdir()).glob(METRICS_PREFIX + "*"))
    except OSError:
        return
    for path in candidates:
        try:
            info = path.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
                continue
            fd = os.open(path / _METRICS_LOCK, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its parent lives
            os.close(fd)
            continue
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def describe_exit(code: int) -> str:
    """`exit 3` or `killed by SIGKILL`, from a returncode."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit {code}"


@dataclass
class _Slot:
    index: int
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    ready: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class _Supervisor:
    def __init__(self, daemon: Daemon, settings: Supervised, port: int, metrics: Path):
        self.daemon = daemon
        self.settings = settings
        self.port = port
        self.metrics = metrics
        self.slots = [_Slot(i) for i in range(settings.workers)]
        self.stopping = asyncio.Event()
        self.status = 0
        self.announced = False
        # Handed on whole to each worker, with the metrics directory added.
        self.env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        for slot in self.slots:
            slot.task = asyncio.create_task(self._keep(slot))
        await self.stopping.wait()
        log.info("workers stopping", workers=len(self.slots))
        await self._stop_all()
        return self.status

    async def _keep(self, slot: _Slot) -> None:
        """Run the worker of one slot, again and again, until the daemon stops."""
        delay = RESTART_MIN
        while not self.stopping.is_set():
            try:
                process = await self._spawn(slot)
            except OSError as exc:  # out of processes or file descriptors: try again later
                log.error("cannot start a worker", worker=slot.index, error=str(exc))
            else:
                code = await process.wait()
                self._forget(process.pid)
                if self.stopping.is_set():
                    return
                if code == 2 and not slot.ready and not self.announced:
                    # Its start-up failed (it printed why): every worker would fail alike.
                    self.status = 2
                    self.stopping.set()
                    return
                if time.monotonic() - slot.started >= STABLE_AFTER:
                    delay = RESTART_MIN
                log.warning(
                    "worker exited; starting another",
                    worker=slot.index,
                    pid=process.pid,
                    status=describe_exit(code),
                    restart_in=delay,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            delay = min(delay * 2, RESTART_MAX)

    async def _spawn(self, slot: _Slot) -> asyncio.subprocess.Process:
        read_end, write_end = os.pipe()
        worker = Worker(WorkerIdentity(slot.index, self.metrics), os.getpid(), write_end)
        settings = self.settings.for_worker(f"-w{slot.index}", self.port)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _ENTRY,
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(write_end,),
                env=self.env,
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        slot.process, slot.started, slot.ready = process, time.monotonic(), False
        self._watch_ready(slot, process, read_end)
        assert process.stdin is not None
        process.stdin.write(pickle.dumps(_Job(self.daemon, settings, worker)))
        with contextlib.suppress(ConnectionError):
            await process.stdin.drain()
        process.stdin.close()
        if self.stopping.is_set():
            process.terminate()
        return process

    def _watch_ready(self, slot: _Slot, process: asyncio.subprocess.Process, fd: int) -> None:
        loop = asyncio.get_running_loop()

        def readable() -> None:
            loop.remove_reader(fd)
            got = os.read(fd, 1)
            os.close(fd)
            if got and slot.process is process:
                slot.ready = True
                log.info("worker ready", worker=slot.index, pid=process.pid)
                self._announce()

        loop.add_reader(fd, readable)

    def _announce(self) -> None:
        if self.announced or not all(slot.ready for slot in self.slots):
            return
        self.announced = True
        log.info(
            "workers ready",
            listen=address(self.settings.listen_host, self.port),
            workers=len(self.slots),
            pids=[slot.process.pid for slot in self.slots if slot.process is not None],
            instance=self.settings.instance,
        )

    def _forget(self, pid: int) -> None:
        """A worker is gone: its live gauges go with it (its counters stay counted)."""
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, str(self.metrics))  # type: ignore[no-untyped-call]

    def _live(self) -> list[asyncio.subprocess.Process]:
        return [
            slot.process
            for slot in self.slots
            if slot.process is not None and slot.process.returncode is None
        ]

    async def _stop_all(self) -> None:
        for process in self._live():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        tasks = [slot.task for slot in self.slots if slot.task is not None]
        _, pending = await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT)
        if pending:
            for process in self._live():
                log.warning("worker did not drain in time; killed", pid=process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            await asyncio.wait(pending, timeout=5)
