"""Transactions, the revision counter and the audit log.

Every write runs in one transaction that bumps the revision (the snapshot version)
and appends an audit entry. On PostgreSQL the revision row's lock orders writers,
so revisions are committed in order (each write transaction locks it first, which
also makes check-then-insert safe between replicas); on SQLite writers queue on BEGIN IMMEDIATE.
Reads that must be consistent (snapshots) use REPEATABLE READ on PostgreSQL and a
read transaction on SQLite. A database that cannot be reached becomes Unavailable.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from config_service.crypto import Cipher
from config_service.db.engine import SQLITE_BEGIN_OPTION
from config_service.db.models import AuditEntry, Revision, utcnow
from config_service.errors import Unavailable
from config_service.rbac import SYSTEM, Subject

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

# How long one database call made for an RPC may take. A database that stops answering
# without resetting the connection (hung server, stuck middlebox) must turn into a fast
# UNAVAILABLE, not a call that hangs until the client gives up.
CALL_DEADLINE = 8.0
# How much longer a caller waits for a COMMIT that started before its deadline: the answer
# must say whether the change was saved, so it is waited for rather than abandoned.
COMMIT_WAIT = 8.0
# How long closing waits for database calls still running in their threads.
CLOSE_WAIT = 5.0
OUTCOME_UNKNOWN = "the change may or may not have been saved: read it back before retrying"

# Also config_service.notify.CHANNEL (kept here so the store does not import asyncio code).
NOTIFY_CHANNEL = "aibridge_revision"


def is_connection_error(exc: BaseException) -> bool:
    """True when the database is unreachable (as opposed to a constraint violation)."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class _Commit:
    """The one commit-or-abandon decision of a database call, shared under a lock by the
    caller (at its deadline) and the worker thread (just before COMMIT): whichever comes
    first wins, so a transaction commits only if its caller will hear about it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self.started = False

    def run(self, work: Callable[[], T]) -> T:
        """Run `work` (in the worker thread) with this decision visible to its writes."""
        _CURRENT.set(self)
        return work()

    def start(self) -> None:
        """Worker: about to COMMIT; raises (so the transaction rolls back) if abandoned."""
        with self._lock:
            if self._abandoned:
                raise Unavailable("the caller's deadline passed; the change was rolled back")
            self.started = True

    def abandon(self) -> bool:
        """Caller, at its deadline: True if nothing will be committed, False if COMMIT began."""
        with self._lock:
            self._abandoned = not self.started
            return self._abandoned


# The decision of the call running in this thread (asyncio.to_thread copies the context).
_CURRENT: ContextVar[_Commit | None] = ContextVar("aibridge_db_commit", default=None)


def _retrieve(work: asyncio.Future[Any]) -> None:
    """Mark the outcome of work nobody waits for any more as seen (no asyncio warning)."""
    if not work.cancelled():
        work.exception()


class Database:
    def __init__(
        self,
        engine: Engine,
        cipher: Cipher,
        deadline: float = CALL_DEADLINE,
        commit_wait: float = COMMIT_WAIT,
    ) -> None:
        self.engine = engine
        self.deadline = deadline
        self.commit_wait = commit_wait
        self.cipher = cipher
        self.is_postgres = engine.dialect.name == "postgresql"
        # SQLite allows one writer; queue ours in-process rather than on the file lock.
        self._sqlite_write_lock = threading.Lock()
        # Calls whose thread still runs (their caller may have given up or been cancelled).
        self._running: set[asyncio.Future[Any]] = set()

    async def close(self) -> None:
        """Wait (up to CLOSE_WAIT) for the threads of calls still running, then close every
        pooled connection. A thread outliving its cancelled caller would otherwise check its
        connection back into a pool already disposed, leaving it open for the GC."""
        if self._running:
            await asyncio.wait(set(self._running), timeout=CLOSE_WAIT)
        self.engine.dispose()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction that sees one consistent state."""
        try:
            with self.engine.connect() as conn:
                if self.is_postgres:
                    conn = conn.execution_options(
                        isolation_level="REPEATABLE READ", postgresql_readonly=True
                    )
                with Session(bind=conn, expire_on_commit=False) as session, session.begin():
                    yield session
        except Exception as exc:
            if is_connection_error(exc):
                raise Unavailable("database unavailable; try again shortly") from exc
            raise

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a blocking store function in a thread, bounded by the call deadline.

        Every answer is true. At the deadline a transaction that has not started COMMIT
        is abandoned (it rolls back: "nothing was changed"); one whose COMMIT has started
        is waited for, up to COMMIT_WAIT more, and answered with its outcome, or with
        UNAVAILABLE saying the outcome is unknown when the database never confirms it.
        """
        commit = _Commit()
        # asyncio.wait, not wait_for or asyncio.timeout: the work must outlive the deadline
        # (a COMMIT in flight is waited for), and a caller cancelled meanwhile leaves it be.
        work = asyncio.ensure_future(asyncio.to_thread(commit.run, partial(fn, *args, **kwargs)))
        work.add_done_callback(_retrieve)
        self._running.add(work)
        work.add_done_callback(self._running.discard)
        done, _ = await asyncio.wait({work}, timeout=self.deadline)
        if not done:
            if commit.abandon():
                raise Unavailable(
                    f"database did not answer within {self.deadline:g} s; nothing was changed"
                )
            done, _ = await asyncio.wait({work}, timeout=self.commit_wait)
            if not done:
                raise Unavailable(
                    f"database did not confirm the commit within "
                    f"{self.deadline + self.commit_wait:g} s; {OUTCOME_UNKNOWN}"
                )
        return work.result()

    @contextmanager
    def write(self, lock_revision: bool = True) -> Iterator[Session]:
        """A read-write transaction; commits on success, rolls back on any exception.

        Run through `call`, it commits only if the caller has not given up on it yet
        (see `call`). Writes that are not part of the provider set (subscriber status)
        pass lock_revision=False.
        """
        commit = _CURRENT.get() or _Commit()
        lock = self._sqlite_write_lock if not self.is_postgres else None
        if lock is not None:
            lock.acquire()
        try:
            with self.engine.connect() as conn:
                if not self.is_postgres:
                    conn = conn.execution_options(**{SQLITE_BEGIN_OPTION: "BEGIN IMMEDIATE"})
                with Session(bind=conn, expire_on_commit=False) as session, session.begin():
                    if self.is_postgres and lock_revision:
                        # Writers queue on the revision row first: every check-then-insert
                        # in the transaction sees the previous writer's commit.
                        session.execute(
                            select(Revision.revision).where(Revision.id == 1).with_for_update()
                        )
                    yield session
                    session.flush()
                    commit.start()  # COMMIT follows as the transaction block ends
        except Exception as exc:
            if is_connection_error(exc):
                if commit.started:
                    raise Unavailable(
                        f"the database connection failed during COMMIT; {OUTCOME_UNKNOWN}"
                    ) from exc
                raise Unavailable("database unavailable; the change was not saved") from exc
            raise
        finally:
            if lock is not None:
                lock.release()

    def revision(self) -> int:
        """The committed revision."""
        with self.read() as session:
            return int(session.execute(select(Revision.revision)).scalar_one())

    def position(self) -> tuple[str, int]:
        """The committed (history, revision): one cheap query, the resync safety net polls it."""
        with self.read() as session:
            history, revision = session.execute(select(Revision.history, Revision.revision)).one()
            return str(history), int(revision)

    def start_new_history(self, seen: str) -> str | None:
        """Replace history `seen` by a new random one, bumping the revision in the same
        transaction; None when it is `seen` no longer (another replica replaced it first).

        Called when the revision of `seen` went backwards (the database was restored from
        an older backup): versions of the new history are a new lineage, which every
        subscriber takes whatever its number, so nothing it saw before the restore survives.
        """
        with self.write() as session:  # PostgreSQL: the revision row is locked first
            current = str(session.execute(select(Revision.history)).scalar_one())
            if current != seen:
                return None
            history = secrets.token_hex(8)
            session.execute(update(Revision).where(Revision.id == 1).values(history=history))
            revision = self.bump_revision(session)
            self.audit(
                session,
                SYSTEM,
                "history.start",
                "database",
                "revision",
                history,
                revision,
                before={"history": seen},
                after={"history": history},
            )
        return history

    @staticmethod
    def revision_in(session: Session) -> int:
        return int(session.execute(select(Revision.revision)).scalar_one())

    @staticmethod
    def bump_revision(session: Session) -> int:
        """Increment the revision inside the caller's transaction (locks the row)."""
        result = session.execute(
            update(Revision)
            .where(Revision.id == 1)
            .values(revision=Revision.revision + 1, updated_at=utcnow())
            .returning(Revision.revision)
        )
        revision = int(result.scalar_one())
        if session.get_bind().dialect.name == "postgresql":
            # Delivered to every replica's listener when (and only if) this commits.
            session.execute(
                text("SELECT pg_notify(:channel, :revision)"),
                {"channel": NOTIFY_CHANNEL, "revision": str(revision)},
            )
        return revision

    @staticmethod
    def audit(
        session: Session,
        subject: Subject,
        action: str,
        resource_type: str,
        resource_id: str,
        resource_name: str,
        revision: int,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """Append an audit entry. Callers pass views with every secret already masked."""
        session.add(
            AuditEntry(
                at=utcnow(),
                actor_id=subject.principal_id,
                actor_name=subject.name,
                action=action,
                resource_type=resource_type,
                resource_id=resource_id,
                resource_name=resource_name,
                revision=revision,
                before=json.dumps(before, sort_keys=True) if before is not None else None,
                after=json.dumps(after, sort_keys=True) if after is not None else None,
            )
        )
