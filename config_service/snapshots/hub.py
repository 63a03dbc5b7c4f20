"""The snapshot hub: the current snapshot per scope, its version, and a change signal.

A watch stream is a version and a wait: send the current snapshot, wait until the
version changes, send again. The hub is refreshed after every write through this
process (at once; if that reload fails the write is still answered as saved), on
PostgreSQL NOTIFY from other replicas, and by a periodic revision check as a safety
net. Versions only move forward within the database's history (`Position`): when the
revision went backwards (the database restored from an older backup) the hub starts a
new history in the database and publishes its state, which every subscriber takes.

The hub also knows whether it can vouch for its snapshot: every database contact it
makes records whether the database answered (`reachable`). A change of either the
version or of reachability calls the `on_change` callbacks once (the watch streams'
fan-out: servicers/config.py), so an open stream notices at once that its replica was
cut off (and ends), or that its token was revoked; and it wakes every `changed()`
waiter (background loops).

A waiter is one future made by the loop it runs on (no `asyncio.Event`, whose `wait`
asks `get_running_loop`, a getpid() system call on Python 3.11, per waiter per change),
kept in one dict that a change swaps for a fresh one and resolves in a single pass. Not
one future shared by all: a task cancelled while awaiting a future cancels that future,
so one closing waiter would wake every other with CancelledError.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from aibridge.logs import get_logger
from config_service.errors import ConfigError
from config_service.rbac import Scope, Subject
from config_service.snapshots.snapshot import SnapshotEntry, build
from config_service.snapshots.state import State, load_state
from config_service.store.database import Database

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

    from config_service.tracing import ConfigTelemetry

log = get_logger("aibridge.config.hub")
T = TypeVar("T")


class Position(NamedTuple):
    """Where a snapshot stands: the database's history and the revision within it.

    Ordered only within one history; a position of another history is another lineage.
    """

    history: str
    revision: int


NOWHERE = Position("", -1)  # before any snapshot
# A subscriber's claim (a version beyond the database) starts at most one history per this
# many seconds on one replica: each is a write and a full resend to every subscriber.
DIVERGE_EVERY = 60.0


class SnapshotHub:
    def __init__(self, db: Database, allow_byok: bool) -> None:
        self._db = db
        self._allow_byok = allow_byok
        self._position = NOWHERE
        self._entries: dict[Scope, SnapshotEntry] = {}
        self._subjects: dict[str, Subject] = {}  # by token SHA-256
        self._live: dict[str, Subject] = {}  # by token id
        # Futures of everyone waiting for the next change; swapped out by each wake.
        self._waiters: dict[asyncio.Future[None], None] = {}
        # Called once per change, in one loop callback: the watch streams' fan-out.
        self._on_change: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        self._diverged_at = -DIVERGE_EVERY  # time.monotonic() of the last `diverged`
        self.reachable = True  # the last database contact succeeded
        self.last_build_seconds = 0.0
        self.listeners: list[Callable[[int], None]] = []
        # Called with the revision after a write through this process is published (the
        # SQLite change signal tells the other processes on the file: local_signal.py).
        self.after_write: list[Callable[[int], None]] = []
        self.tracing: ConfigTelemetry | None = None  # spans, when telemetry is on
        self.built_by: SpanContext | None = None  # the span of the current snapshot's rebuild

    @property
    def revision(self) -> int:
        return self._position.revision

    @property
    def history(self) -> str:
        return self._position.history

    @property
    def position(self) -> Position:
        return self._position

    @property
    def version(self) -> str:
        return str(self._position.revision)

    def entry(self, scope: Scope) -> SnapshotEntry:
        return self._entries[scope]

    def subject_for(self, token_hash: str) -> Subject | None:
        """The subject of a live token as of the current snapshot (no database call)."""
        return self._subjects.get(token_hash)

    def live_subject(self, token_id: str) -> Subject | None:
        """The token's subject as of the current snapshot; None once it is revoked."""
        return self._live.get(token_id)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self._on_change:  # in one callback, once the publishing code has run on
            asyncio.get_running_loop().call_soon(self._changed)

    def _changed(self) -> None:
        for callback in self._on_change:
            callback()

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call `callback` once at each published version or change of `reachable` (in a
        loop callback of its own, after the publishing code ran on)."""
        self._on_change.append(callback)

    async def _contact(self, call: Awaitable[T]) -> T:
        """A database call whose outcome says whether this replica can vouch for its snapshot."""
        try:
            result = await call
        except Exception as exc:
            if self.reachable:
                self.reachable = False
                log.error(
                    "database unreachable: health NOT_SERVING, watch streams ended, "
                    "snapshots refused until it answers again",
                    error=str(exc),
                )
                self._wake()
            raise
        if not self.reachable:
            self.reachable = True
            log.info("database reachable again: serving snapshots", version=self.version)
            self._wake()
        return result

    async def refresh(self) -> bool:
        """Reload from the database; publish when the revision moved forward, or the
        database is in another history."""
        if self.tracing is None:
            return await self._refresh()
        started = time.time_ns()
        published = await self._refresh()
        # No await from here on: woken streams run after `built_by` names this rebuild.
        self.built_by = self.tracing.rebuilt(started, self.version, published, self.built_by)
        return published

    async def _refresh(self) -> bool:
        async with self._lock:
            started = time.perf_counter()
            state = await self._contact(self._db.call(load_state, self._db))
            history, revision = self._position
            if state.history == history and state.revision < revision:
                state = await self._went_back(state.history, state.revision)
            if state.history == history and state.revision <= revision:
                return False
            if history and state.history != history:
                log.warning(
                    "the database is in a new history: its state is published to every "
                    "subscriber, whatever their version",
                    history=state.history,
                    previous_history=history,
                    previous_version=self.version,
                    version=str(state.revision),
                )
            entries = build(state, self._allow_byok, datetime.now(UTC))
            subjects = [
                (t.sha256, Subject(t.principal_id, t.principal_name, t.role, t.token_id))
                for t in state.tokens
            ]
            self._subjects = dict(subjects)
            self._live = {subject.token_id: subject for _, subject in subjects}
            self._entries = entries
            self._position = Position(state.history, state.revision)
            self.last_build_seconds = time.perf_counter() - started
            self._wake()
        log.info(
            "snapshot published",
            version=self.version,
            providers=len(state.providers),
            build_ms=round(self.last_build_seconds * 1000, 2),
        )
        for listener in self.listeners:
            listener(self.revision)
        return True

    async def _went_back(self, history: str, revision: int) -> State:
        """The database's revision is below one seen of its history: it was restored from
        an older backup (or replaced). Start a new history (one replica wins) and load it."""
        log.warning(
            "the database revision went backwards (restored from an older backup?): "
            "starting a new snapshot history so every subscriber takes the restored state",
            history=history,
            revision=revision,
            seen_revision=max(revision, self.revision),
        )
        await self._contact(self._db.call(self._db.start_new_history, history))
        return await self._contact(self._db.call(load_state, self._db))

    async def diverged(self, history: str, revision: int) -> bool:
        """A subscriber applied `revision` of `history`, beyond what the database holds of
        it: start a new history (unless the database is in another one already) and
        publish it. For a restore made while no replica was running. False, and nothing
        done, when this replica started one less than DIVERGE_EVERY seconds ago."""
        async with self._lock:
            now = time.monotonic()
            if now - self._diverged_at < DIVERGE_EVERY:
                return False
            self._diverged_at = now
            await self._went_back(history, revision)
        await self.refresh()
        return True

    async def publish_write(self) -> None:
        """Publish a write that has committed, before its caller is answered.

        Never raises: the write is saved, so its answer must not become an error. When the
        reload fails the hub catches up through NOTIFY or the periodic revision check.
        """
        try:
            if self.tracing is None:
                await self.refresh()
            else:
                with self.tracing.writing():  # a rebuild meanwhile is this write's
                    await self.refresh()
        except Exception as exc:
            log.warning(
                "snapshot reload after a committed write failed; catching up by resync",
                error=exc.message if isinstance(exc, ConfigError) else type(exc).__name__,
            )
            return
        for hook in self.after_write:
            hook(self.revision)

    async def refresh_if_behind(self) -> bool:
        """Cheap check of the committed position; full reload only when it moved (either
        way: a revision below ours is a restore, which `refresh` turns into a history)."""
        position = await self._contact(self._db.call(self._db.position))
        if position != self.position:
            return await self.refresh()
        return False

    @property
    def waiting(self) -> int:
        """How many wait in `changed()` for the next change (background loops)."""
        return len(self._waiters)

    async def changed(self) -> None:
        """Return at the next published version or change of `reachable`."""
        loop = self._loop
        if loop is None:  # bound to the loop of its first waiter, as asyncio's primitives are
            loop = self._loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters[waiter] = None
        try:
            await waiter
        finally:
            # Gone already when a change woke it; still there when the waiter was cancelled.
            self._waiters.pop(waiter, None)

    async def wait_unreachable(self) -> None:
        """Return once a database call failed."""
        while self.reachable:
            await self.changed()

    def published(self, scope: Scope) -> tuple[Position, SnapshotEntry]:
        """The current position and the snapshot of `scope` published with it, together."""
        return self._position, self._entries[scope]
