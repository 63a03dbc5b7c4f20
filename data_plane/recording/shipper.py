"""Ships the bridge's interception records to the config service, losslessly (DESIGN §11).

    shipper = Shipper(settings, connection, metrics)   # connection: the subscriber's config
    await shipper.start()       # replays what an earlier run left in the spool
    shipper.submit(record)      # from the request path: never blocks, never raises
    await shipper.close()       # at shutdown: queue to the service, else to the spool

`submit` appends to a bounded in-memory queue (past `queue_size` records the record is
counted as dropped, `queue_full`); a record gives its values when a batch is made of it
(the bridge submits them made already, `record.Made`, so that the queue holds values
rather than whole requests), and a batch is encoded as columns (`batch.py`: one C call
per column, no message per record): as `fixed_columns` once an answer of the service
said it reads them, else as `columns`; an answer to a `fixed_columns` batch without that
word (a service from before them, which ignored the batch) has the same records sent
again as `columns`. One task ships the queue in batches (every `flush_interval`, or at
once when a batch is full: `aibridge.recording.MAX_BATCH` records or 3 MiB) over
`UsageService.RecordInterceptions` with the bridge's token, on a channel made like the
subscriber's (same TLS, same reconnect backoff). The config service stores a record at
most once, by its id, so every retry below is harmless even when the answer to the first
attempt was lost.

When a batch fails (service unreachable, deadline passed, token refused...), it is
appended to the spool file (`spool.py`: fsynced, 0600, capped) and the task retries with
capped exponential backoff (0.1 s doubling to 5 s). While the spool holds anything, new
records go behind it (each flush interval, or at once at the high-water mark, half the
queue), and the spool is replayed oldest frame first, each frame acknowledged only once
the service stored it; the service being slow has the same effect: while an attempt takes
longer than the flush interval, the queue is moved to the spool. So records wait in
memory for about one flush interval at most: that, plus the one batch in flight, is what a
SIGKILL can lose. (A batch that was in flight when it failed is spooled behind what was
moved meanwhile; the records keep their times, which is what every reader orders by.)

A batch the service refuses as invalid (INVALID_ARGUMENT) is split in halves until the
records it refuses are alone; those are dropped (`rejected`), never retried forever. A
record too large for any batch is dropped when it is taken from the queue (`too_large`), so
RESOURCE_EXHAUSTED can only be a limit of the service: retried like any other failure.
Past the spool's cap records are dropped (`spool_full`); a spool that cannot be written
keeps them in memory, within the queue size, and is tried again (at shutdown they count as
`spool_full`). Every drop is counted in
`aibridged_recording_records_dropped_total{reason}` and logged as a warning with the
counts, at most one line per 10 s.

Spools: the node's own (`<data dir>/spool/<node id>.spool` by default), and any other
spool in that directory that no live process holds (a bridge that died or was given a new
node id): such a spool is adopted, replayed first, and deleted once empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio

from aibridge.config.v1 import usage_service_pb2 as pb
from aibridge.logs import get_logger
from aibridge.recording import MAX_BATCH
from data_plane.errors import SpoolBusy, SpoolError
from data_plane.recording.batch import Batch, columns, is_fixed, split, unfix
from data_plane.recording.metrics import RecordingMetrics
from data_plane.recording.record import Record
from data_plane.recording.spool import SUFFIX, Spool
from data_plane.subscriber import SubscriberConfig, bearer, make_channel

log = get_logger(__name__)
T = TypeVar("T")

BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 5.0
# Under the config service's 4 MiB receive limit, with room for the framing.
BATCH_BYTES = 3 * 1024 * 1024
WARN_EVERY = 10.0
# Records taken between two yields to the event loop.
_SLICE = 256
_METHOD = "/aibridge.config.v1.UsageService/RecordInterceptions"


@dataclass(frozen=True)
class ShipperSettings:
    queue_size: int  # records held in memory at most
    flush_interval: float  # seconds a record waits in memory at most (service up)
    spool_path: Path
    spool_max_bytes: int
    timeout: float  # deadline of one batch, and of the flush at shutdown


class _Warnings:
    """Counts of dropped records, logged as one warning at most every WARN_EVERY."""

    def __init__(self) -> None:
        self.pending: dict[str, int] = {}
        self.total = 0
        self._last = -WARN_EVERY

    def add(self, reason: str, count: int) -> None:
        self.pending[reason] = self.pending.get(reason, 0) + count
        self.total += count
        self.flush()

    def flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.pending and (force or now - self._last >= WARN_EVERY):
            log.warning(
                "interception records dropped",
                dropped=self.pending,
                since_start=self.total,
            )
            self.pending = {}
            self._last = now


class Shipper:
    """The bridge's record sink (`submit`), and the task that ships what it takes."""

    def __init__(
        self, settings: ShipperSettings, connection: SubscriberConfig, metrics: RecordingMetrics
    ) -> None:
        self.settings = settings
        self._connection = connection
        self._metadata = bearer(connection.token)
        self._metrics = metrics
        self._queue: deque[Record] = deque()
        self._capacity = settings.queue_size
        self._high_water = max(1, settings.queue_size // 2)
        self._batch_trigger = min(MAX_BATCH, self._high_water)
        # Batches taken from the queue that are neither stored nor spooled (the spool
        # could not be written), oldest first, and the one being shipped.
        self._unsent: deque[tuple[bytes, int]] = deque()
        self._unsent_records = 0
        self._in_flight: tuple[bytes, int] | None = None
        self._own = Spool(settings.spool_path, settings.spool_max_bytes)
        self._spools: list[Spool] = [self._own]  # adopted ones first: replayed first
        # One worker: spool operations run one at a time, in order, even when the task
        # that asked for one was cancelled meanwhile.
        self._io = ThreadPoolExecutor(1, thread_name_prefix="recording-spool")
        self._wake = asyncio.Event()
        self._closing = False
        self._closed = False
        self._healthy = True
        self._logged_at: dict[str, float] = {}  # failure event -> when it was last logged
        self._spilled_at = 0.0
        self._drops = _Warnings()
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None
        # The service's last answer said it reads fixed_columns: batches are encoded so
        # (see `_ship` for an answer that says otherwise).
        self._fixed = False
        metrics.queue_depth.set_function(lambda: len(self._queue) + self._unsent_records)
        metrics.spool_bytes.set_function(lambda: sum(s.size for s in self._spools if s.is_open))
        metrics.spool_records.set_function(lambda: sum(s.pending_records for s in self._spools))

    # ------------------------------------------------------------------ the sink

    def submit(self, record: Record) -> None:
        """Queue `record` for shipping (request path, on the event loop's thread: no I/O,
        no await, never raises)."""
        if self._closed:
            self._drop("closed", 1)
            return
        queue = self._queue
        queued = len(queue) + 1
        if queued + self._unsent_records > self._capacity:
            self._drop("queue_full", 1)
            return
        queue.append(record)
        if queued == self._batch_trigger or queued == self._high_water:
            self._wake.set()

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Open the spools (the node's own, and orphans to adopt), then ship in a task.

        SpoolError when the spool file is not a spool (the message says what to do).
        """
        await self._on_io(self._open_spools)
        self._channel = make_channel(self._connection)
        self._call = self._channel.unary_unary(
            _METHOD,
            request_serializer=None,  # the payload is already the serialized request
            response_deserializer=pb.RecordInterceptionsResponse.FromString,
        )
        self._task = asyncio.create_task(self._run(), name="recording")

    async def close(self) -> None:
        """Flush everything held in memory: to the service while it answers within the
        timeout and the spool is empty, else to the spool. Idempotent."""
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.timeout
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=self.settings.timeout)
            if not done:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._closed = True  # from here on, a late record is counted as dropped
        if self._in_flight is not None:
            self._hold_front(self._in_flight)
            self._in_flight = None
        direct = self._healthy and self._head() is None
        spooled = 0
        while self._queue or self._unsent:
            if not self._unsent:
                await self._take()
                continue
            payload, count = self._unsent[0]
            left = deadline - loop.time()
            if direct and left > 0 and self._call is not None:
                if await self._ship(payload, count, left):
                    self._release()
                    continue
                direct = False
            before = self._unsent_records
            await self._spool_unsent()
            spooled += before - self._unsent_records
            if self._unsent:  # the spool cannot be written: nothing else can keep them
                self._drop("spool_full", self._unsent_records + len(self._queue))
                self._unsent.clear()
                self._unsent_records = 0
                self._queue.clear()
        if spooled:
            log.info(
                "records spooled at shutdown; replayed at the next start",
                records=spooled,
                spool=str(self._own.path),
            )
        self._drops.flush(force=True)
        if self._channel is not None:
            await self._channel.close(None)
        await self._on_io(self._close_spools)
        self._io.shutdown(wait=True)

    # ------------------------------------------------------------------ the task

    async def _run(self) -> None:
        """Ship until closing; a bug or an I/O error in one round is logged, not fatal (a
        dead task would leave records to pile up in the queue)."""
        while not self._closing:
            try:
                await self._ship_loop()
            except Exception:
                log.exception("record shipping failed; retrying", spool=str(self._own.path))
                await self._idle(BACKOFF_MAX)

    async def _ship_loop(self) -> None:
        delay = BACKOFF_INITIAL
        interval = self.settings.flush_interval
        replay_started: float | None = None
        while not self._closing:
            head = self._head()
            if head is not None:
                replay_started = replay_started or time.monotonic()
                frame = await self._on_io(head.peek)
                if frame is not None and await self._deliver((frame.payload, frame.count)):
                    await self._on_io(head.ack, frame)
                    if head.empty and head is not self._own:
                        await self._on_io(head.remove)
                        self._spools.remove(head)
                        log.info("adopted recording spool replayed; removed", path=str(head.path))
                    delay = self._recovered()
                    # New records go behind the spool, and wait in memory no longer than
                    # a flush interval meanwhile.
                    if self._queue and time.monotonic() - self._spilled_at >= interval:
                        await self._spill()
                    continue
            else:
                if replay_started is not None:
                    log.info(
                        "recording spool replayed",
                        seconds=round(time.monotonic() - replay_started, 3),
                    )
                    replay_started = None
                if not self._unsent:
                    await self._gather()
                    await self._take()
                    if not self._unsent:
                        continue
                batch = self._in_flight = self._unsent.popleft()
                self._unsent_records -= batch[1]
                delivered = await self._deliver(batch)
                self._in_flight = None
                if delivered:
                    delay = self._recovered()
                    continue
                self._hold_front(batch)
                await self._spool_unsent()
            await self._idle(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
            delay = min(delay * 2, BACKOFF_MAX)

    async def _deliver(self, batch: tuple[bytes, int]) -> bool:
        """Ship one batch; while the attempt takes longer than the flush interval, or the
        queue passes its high-water mark, the queue is moved to the spool meanwhile."""
        ship = asyncio.ensure_future(self._ship(*batch, self.settings.timeout))
        try:
            while True:
                self._wake.clear()
                woken = asyncio.ensure_future(self._wake.wait())
                try:
                    done, _ = await asyncio.wait(
                        {ship, woken},
                        timeout=self.settings.flush_interval,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    woken.cancel()
                if ship.done():
                    return ship.result()
                if not done or len(self._queue) >= self._high_water:
                    await self._spill()
        except BaseException:
            ship.cancel()
            raise

    async def _ship(self, payload: bytes, count: int, deadline: float) -> bool:
        """One RecordInterceptions call; True once the batch is stored (or the records
        the service refuses are dropped), False when it must be tried again."""
        try:
            response = await self._call(
                payload, metadata=self._metadata, timeout=deadline, wait_for_ready=False
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.INVALID_ARGUMENT:
                return await self._split(payload, count, exc, deadline)
            self._metrics.batches["retried"].inc()
            self._failed(exc.code().name, exc.details() or "")
            return False
        except Exception as exc:  # grpc raises a few others (a closed channel: UsageError)
            self._metrics.batches["retried"].inc()
            self._failed(type(exc).__name__, str(exc))
            return False
        if response.reads_fixed_columns != self._fixed:
            self._fixed = response.reads_fixed_columns
            log.info(
                "record batch form set by the config service's answer",
                form="fixed_columns" if self._fixed else "columns",
            )
        if not self._fixed and is_fixed(payload):
            # A service from before fixed_columns ignored them (0 records stored): the same
            # records again, as columns (a rolling upgrade, replicas of both kinds).
            return await self._ship(unfix(payload), count, deadline)
        self._metrics.batches["shipped"].inc()
        self._metrics.inserted.inc(response.inserted)
        self._metrics.duplicates.inc(response.duplicates)
        return True

    async def _split(
        self, payload: bytes, count: int, exc: grpc.aio.AioRpcError, deadline: float
    ) -> bool:
        parts, ids = split(payload)
        if not parts:
            log.warning(
                "config service refused an interception record",
                code=exc.code().name,
                detail=exc.details(),
                record_id=ids[0] if ids else "",
            )
            self._drop("rejected", max(len(ids), count))
            return True
        for part in parts:
            if not await self._ship(part, 0, deadline):
                return False
        return True

    # ------------------------------------------------------------------ queue → batches

    async def _gather(self) -> None:
        """Wait for a batch: a flush interval, or less when a full batch is queued."""
        self._drops.flush()
        if len(self._queue) >= self._batch_trigger or self._closing:
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.settings.flush_interval)

    async def _take(self) -> None:
        """Move one batch from the queue to the unsent batches (encoded for the wire).

        The records are read where they are (a copy of the first MAX_BATCH), made into
        values in slices (a yield to the event loop between two), and removed from the
        queue only once the batch is made, with no await in between: a task cancelled
        meanwhile (at shutdown) leaves them queued."""
        queue = self._queue
        records = list(islice(queue, MAX_BATCH))
        batch = Batch()
        consumed = 0  # records from the front of the queue that are done with
        for lo in range(0, len(records), _SLICE):
            part = records[lo : lo + _SLICE]
            done, full = self._fill(batch, part)
            consumed += done
            if full:
                break
            if lo + _SLICE < len(records):
                await asyncio.sleep(0)
        if consumed == len(queue):
            queue.clear()
        else:
            self._queue = deque(islice(queue, consumed, None))
        if batch:
            try:
                payload = batch.encode(self._fixed)
            except Exception:  # a value of a wrong type: find the records that cannot go
                payload = self._encode_each(batch)
            count = len(batch)
            if payload:
                self._unsent.append((payload, count))
                self._unsent_records += count

    def _fill(self, batch: Batch, records: list[Record]) -> tuple[int, bool]:
        """Add `records` to `batch`: how many of them are done with (added or dropped),
        and whether the batch is full. All at once when none fails and they fit, as
        they do unless prompts or tool calls are large; else one by one."""
        try:
            rows = [record.values() for record in records]
        except Exception:  # a bug in one record's making must not stop the shipping
            return self._fill_each(batch, records, 0)
        added = batch.extend(rows, BATCH_BYTES)
        if added == len(rows):
            return added, False
        return self._fill_each(batch, records, added)

    def _fill_each(self, batch: Batch, records: list[Record], start: int) -> tuple[int, bool]:
        for i in range(start, len(records)):
            record = records[i]
            try:
                values = record.values()
            except Exception:
                log.exception("building an interception record failed", request_id=record.id)
                self._drop("unbuildable", 1)
                continue
            cost = batch.add(values, BATCH_BYTES)  # 0: added
            if not cost:
                continue
            if Batch().add(values, BATCH_BYTES):  # too large for any batch
                log.warning(
                    "interception record too large to ship", record_id=record.id, bytes=cost
                )
                self._drop("too_large", 1)
                continue
            return i, True
        return len(records), False

    def _encode_each(self, batch: Batch) -> bytes:
        """The batch without the records whose values cannot be encoded (dropped,
        `unbuildable`)."""
        kept = Batch()
        for values in batch.rows:
            try:
                columns([values])
            except Exception:
                log.exception("encoding an interception record failed", request_id=values[1])
                self._drop("unbuildable", 1)
                continue
            kept.add(values)
        batch.rows[:] = kept.rows
        return kept.encode(self._fixed) if kept else b""

    def _hold_front(self, batch: tuple[bytes, int]) -> None:
        self._unsent.appendleft(batch)
        self._unsent_records += batch[1]

    def _release(self) -> None:
        _, count = self._unsent.popleft()
        self._unsent_records -= count

    # ------------------------------------------------------------------ spool

    async def _idle(self, seconds: float) -> None:
        """Back off for `seconds`, moving the queue to the spool every flush interval
        (and at the high-water mark), so records do not wait in memory meanwhile."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while not self._closing:
            left = end - loop.time()
            if left <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(left, self.settings.flush_interval))
            await self._spill()
            self._drops.flush()

    async def _spill(self) -> None:
        """Everything queued and unsent to the spool, oldest first."""
        self._spilled_at = time.monotonic()
        while self._queue:
            await self._take()
        await self._spool_unsent()

    async def _spool_unsent(self) -> None:
        while self._unsent:
            payload, count = self._unsent[0]
            try:
                stored = await self._on_io(self._own.append, payload, count)
            except (OSError, SpoolError) as exc:
                # Kept in memory (within the queue's bound) and tried again later.
                self._log_failure(
                    "recording spool cannot be written", path=str(self._own.path), error=str(exc)
                )
                return
            self._release()
            if stored:
                self._metrics.batches["spooled"].inc()
            else:
                self._drop("spool_full", count)

    def _head(self) -> Spool | None:
        """The oldest spool with frames to replay."""
        return next((s for s in self._spools if not s.empty), None)

    def _open_spools(self) -> None:
        own = self._own
        try:
            own.open()
        except SpoolBusy:
            alternative = own.path.with_name(f"{own.path.stem}-{os.getpid()}{SUFFIX}")
            log.warning(
                "recording spool in use by another process (two bridges with one node id?); "
                "using another file",
                busy=str(own.path),
                spool=str(alternative),
            )
            own = self._own = Spool(alternative, self.settings.spool_max_bytes)
        if own.is_open:  # ours: a compaction cut short by a crash left its copy behind
            for stale in own.path.parent.glob(f".{own.path.name}.*.tmp"):
                stale.unlink(missing_ok=True)
        adopted: list[Spool] = []
        directory = own.path.parent
        candidates = sorted(directory.glob("*" + SUFFIX)) if directory.is_dir() else []
        for candidate in sorted(candidates, key=_mtime):
            if candidate == own.path:
                continue
            spool = Spool(candidate, self.settings.spool_max_bytes)
            try:
                if spool.open() is None:
                    continue
            except SpoolError:
                continue  # alive (locked by its bridge), or not a spool: not ours to take
            if spool.empty:
                spool.remove()
                continue
            log.info(
                "adopting the recording spool of a bridge that is gone",
                path=str(candidate),
                records=spool.pending_records,
            )
            adopted.append(spool)
        self._spools = [*adopted, own]
        waiting = sum(s.pending_records for s in self._spools)
        if waiting:
            log.info("replaying the recording spool", records=waiting, spool=str(own.path))

    def _close_spools(self) -> None:
        for spool in self._spools:
            spool.close()

    async def _on_io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    # ------------------------------------------------------------------ accounting

    def _drop(self, reason: str, count: int) -> None:
        if count:
            self._metrics.dropped[reason].inc(count)
            self._drops.add(reason, count)

    def _failed(self, code: str, detail: str) -> None:
        if self._healthy:
            self._healthy = False
            self._logged_at.clear()
        self._log_failure(
            "config service is not taking records; spooling them",
            code=code,
            detail=detail,
            spool=str(self._own.path),
        )

    def _log_failure(self, event: str, **fields: Any) -> None:
        now = time.monotonic()
        if now - self._logged_at.get(event, -WARN_EVERY) >= WARN_EVERY:
            self._logged_at[event] = now
            log.warning(event, **fields)

    def _recovered(self) -> float:
        if not self._healthy:
            self._healthy = True
            log.info("config service takes records again")
        return BACKOFF_INITIAL


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
