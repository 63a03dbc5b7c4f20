"""Interception records (DESIGN §11): batched idempotent inserts, scoped reads, summaries,
and retention pruning.

Writes never bump the revision (records are not configuration). A batch is one
`INSERT ... ON CONFLICT (id) DO NOTHING RETURNING id` (SQLAlchemy sends it as a few
multi-row statements), so a replayed batch inserts nothing and a record is stored at most
once even when two replicas receive the same batch; tool calls are inserted for the new
records only. Reads are scoped by `rbac.usage_view`: a member sees only its own records,
and prompts and tool arguments come back blank unless the subject may read them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Select,
    Table,
    and_,
    case,
    column,
    delete,
    func,
    or_,
    select,
    table,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from aibridge.recording import TOKEN_KINDS
from config_service.db.models import Interception, InterceptionToolCall
from config_service.errors import InvalidArgument, NotFound
from config_service.rbac import Action, Subject, UsageView, authorize, usage_view
from config_service.store.database import Database

Row = dict[str, Any]

MAX_GROUPS = 10_000
# Arbitrary constant shared by every replica: one of them prunes at a time.
PRUNE_LOCK_ID = 0x7573616765  # "usage"
COMPLETED, CANCELLED = "completed", "cancelled"
_TABLE = cast(Table, Interception.__table__)
_TOOLS = cast(Table, InterceptionToolCall.__table__)
_COLUMNS = [c.name for c in _TABLE.c]
_STAGING = table("interceptions_incoming", *(column(name) for name in _COLUMNS))
_FROM_STAGING = str(
    postgresql.insert(_TABLE)
    # In id order: two batches that share records (a retry racing the original, in
    # another order) take the unique index's row locks in the same order, so one
    # waits for the other instead of deadlocking.
    .from_select(_COLUMNS, select(_STAGING).order_by(_STAGING.c.id))
    .on_conflict_do_nothing(index_elements=["id"])
    .returning(_TABLE.c.id)
    .compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
)
# Every column but the prompt: what a list answers.
_LISTED = [c for c in _TABLE.c if c.name != "prompt"]


@dataclass(frozen=True)
class UsageFilter:
    start: datetime | None = None
    end: datetime | None = None
    principal_id: str = ""
    provider_name: str = ""
    model: str = ""  # the requested or the served model
    client: str = ""
    outcome: str = ""


@dataclass(frozen=True)
class Cursor:
    """Where the previous page ended: the last record's (started_at, id)."""

    started_at: datetime
    id: str

    def encode(self) -> str:
        raw = json.dumps([self.started_at.isoformat(), self.id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            started, record_id = json.loads(raw)
            when = datetime.fromisoformat(started)
            if when.tzinfo is None or not isinstance(record_id, str) or len(record_id) > 36:
                raise ValueError
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise InvalidArgument(
                "page_token", "is not a token this service gave (pass next_page_token as is)"
            ) from None
        return cls(when.astimezone(UTC), record_id)


@dataclass(frozen=True)
class Stored:
    inserted: int
    duplicates: int


def _insert_sqlite(session: Session, rows: Sequence[Row], tool_calls: Sequence[Row]) -> set[str]:
    stmt = (
        sqlite.insert(_TABLE).on_conflict_do_nothing(index_elements=["id"]).returning(_TABLE.c.id)
    )
    inserted = set(session.execute(stmt, list(rows)).scalars())
    new_calls = [t for t in tool_calls if t["interception_id"] in inserted]
    if new_calls:
        session.execute(_TOOLS.insert(), new_calls)
    return inserted


def _copy(cursor: Any, target: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
    with cursor.copy(f"COPY {target} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row[name] for name in columns])


def _insert_postgres(session: Session, rows: Sequence[Row], tool_calls: Sequence[Row]) -> set[str]:
    """COPY into a per-connection staging table, then one INSERT ... SELECT ... ON CONFLICT.

    A multi-row INSERT with ~30,000 parameters spends most of its time in the driver
    rewriting the query text; COPY streams the rows (psycopg's C path) and the one
    statement that follows is short. The staging table empties itself at COMMIT.
    """
    cursor = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(
        "CREATE TEMP TABLE IF NOT EXISTS interceptions_incoming "
        "(LIKE interceptions) ON COMMIT DELETE ROWS"
    )
    _copy(cursor, "interceptions_incoming", _COLUMNS, rows)
    cursor.execute(_FROM_STAGING)
    inserted = {str(r[0]) for r in cursor.fetchall()}
    new_calls = [t for t in tool_calls if t["interception_id"] in inserted]
    if new_calls:
        # Their records were inserted by this transaction: no conflict is possible.
        _copy(cursor, "interception_tool_calls", [c.name for c in _TOOLS.c], new_calls)
    return inserted


def record(
    db: Database, subject: Subject, rows: Sequence[Row], tool_calls: Sequence[Row]
) -> Stored:
    """Store a batch; records whose id is already stored are duplicates, left untouched.

    `tool_calls` rows carry `interception_id`; those of duplicates are not inserted.
    """
    authorize(subject, Action.WRITE_USAGE)
    if not rows:
        return Stored(0, 0)
    insert = _insert_postgres if db.is_postgres else _insert_sqlite
    with db.write(lock_revision=False) as session:
        inserted = insert(session, rows, tool_calls)
    return Stored(len(inserted), len(rows) - len(inserted))


def _where(flt: UsageFilter, view: UsageView) -> list[ColumnElement[bool]]:
    c = _TABLE.c
    conditions: list[ColumnElement[bool]] = []
    if view.principal_id is not None:
        conditions.append(c.principal_id == view.principal_id)
    if flt.start is not None:
        conditions.append(c.started_at >= flt.start)
    if flt.end is not None:
        conditions.append(c.started_at < flt.end)
    if flt.principal_id:
        conditions.append(c.principal_id == flt.principal_id)
    if flt.provider_name:
        conditions.append(c.provider_name == flt.provider_name)
    if flt.model:
        conditions.append(or_(c.requested_model == flt.model, c.served_model == flt.model))
    if flt.client:
        conditions.append(c.client == flt.client)
    if flt.outcome:
        conditions.append(c.outcome == flt.outcome)
    return conditions


def list_interceptions(
    db: Database, subject: Subject, flt: UsageFilter, limit: int, after: Cursor | None
) -> list[Row]:
    """Up to `limit` records newest first (started_at, then id), after the cursor."""
    view = usage_view(subject)
    c = _TABLE.c
    conditions = _where(flt, view)
    if after is not None:
        conditions.append(
            or_(
                c.started_at < after.started_at,
                and_(c.started_at == after.started_at, c.id < after.id),
            )
        )
    query = (
        select(*_LISTED).where(*conditions).order_by(c.started_at.desc(), c.id.desc()).limit(limit)
    )
    with db.read() as session:
        return [dict(r, prompt="") for r in session.execute(query).mappings()]


def get_interception(db: Database, subject: Subject, record_id: str) -> tuple[Row, list[Row]]:
    """One record and its tool calls; NOT_FOUND also for another principal's record."""
    view = usage_view(subject)
    conditions = [_TABLE.c.id == record_id, *_where(UsageFilter(), view)]
    with db.read() as session:
        found = session.execute(select(_TABLE).where(*conditions)).mappings().one_or_none()
        if found is None:
            raise NotFound("no interception record with this id (or not yours to read)")
        calls = [
            dict(r)
            for r in session.execute(
                select(_TOOLS)
                .where(_TOOLS.c.interception_id == record_id)
                .order_by(_TOOLS.c.position)
            ).mappings()
        ]
    row = dict(found)
    if not view.content:
        row["prompt"] = ""
        for call in calls:
            call["arguments"] = ""
    return row, calls


def _period(session: Session, length: int) -> ColumnElement[str]:
    """started_at as 'YYYY-MM-DD' (length 10) or 'YYYY-MM-DD HH' (length 13), in UTC."""
    column = _TABLE.c.started_at
    if session.get_bind().dialect.name == "postgresql":
        pattern = "YYYY-MM-DD" if length == 10 else "YYYY-MM-DD HH24"
        return func.to_char(func.timezone("UTC", column), pattern)
    # SQLite stores UTC datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff'.
    return func.substr(column, 1, length)


def _dimension(session: Session, name: str) -> list[ColumnElement[Any]]:
    c = _TABLE.c
    columns: dict[str, list[ColumnElement[Any]]] = {
        "principal": [c.principal_id],
        "provider": [c.provider_name],
        "model": [c.requested_model],
        "client": [c.client],
        "day": [_period(session, 10)],
        "hour": [_period(session, 13)],
    }
    return columns[name]


def _counts() -> list[ColumnElement[Any]]:
    c = _TABLE.c
    failed = case((c.outcome.in_((COMPLETED, CANCELLED)), 0), else_=1)
    return [
        func.count().label("requests"),
        func.coalesce(func.sum(failed), 0).label("failures"),
        func.coalesce(func.sum(case((c.outcome == CANCELLED, 1), else_=0)), 0).label("cancelled"),
        *(func.coalesce(func.sum(c[kind]), 0).label(kind) for kind in TOKEN_KINDS),
    ]


def _parse_period(value: str | None) -> datetime | None:
    if not value:
        return None
    fmt = "%Y-%m-%d" if len(value) == 10 else "%Y-%m-%d %H"
    return datetime.strptime(value, fmt).replace(tzinfo=UTC)


def summarize(
    db: Database, subject: Subject, flt: UsageFilter, group_by: Sequence[str]
) -> tuple[list[Row], Row]:
    """(groups, total) of the selected records; each group row holds its dimensions."""
    view = usage_view(subject)
    conditions = _where(flt, view)
    with db.read() as session:
        total = dict(session.execute(select(*_counts()).where(*conditions)).mappings().one())
        if not group_by:
            return [], total
        keys: list[ColumnElement[Any]] = []
        labelled: list[ColumnElement[Any]] = []
        for name in group_by:
            for column in _dimension(session, name):
                keys.append(column)
                labelled.append(column.label(name))
        extra = [func.max(_TABLE.c.principal_name).label("principal_name")]
        order = [
            k.desc() if n in ("day", "hour") else k for k, n in zip(keys, group_by, strict=True)
        ]
        query: Select[Any] = (
            select(*labelled, *(extra if "principal" in group_by else []), *_counts())
            .where(*conditions)
            .group_by(*keys)
            .order_by(*order)
            .limit(MAX_GROUPS + 1)
        )
        groups = [dict(r) for r in session.execute(query).mappings()]
    if len(groups) > MAX_GROUPS:
        raise InvalidArgument(
            "group_by",
            f"more than {MAX_GROUPS} groups: narrow the time range or group by fewer dimensions",
        )
    for group in groups:
        for period in ("day", "hour"):
            if period in group:
                group[period] = _parse_period(group[period])
    return groups, total


def prune(db: Database, before: datetime, batch: int) -> int | None:
    """Delete up to `batch` records started before `before` (their tool calls cascade).

    Returns how many went, or None when another replica is pruning (PostgreSQL: an
    advisory lock held for the transaction lets one replica at a time prune).
    """
    with db.write(lock_revision=False) as session:
        if db.is_postgres:
            locked = session.execute(
                text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": PRUNE_LOCK_ID}
            ).scalar_one()
            if not locked:
                return None
        oldest = (
            select(_TABLE.c.id)
            .where(_TABLE.c.started_at < before)
            .order_by(_TABLE.c.started_at)
            .limit(batch)
            .scalar_subquery()
        )
        result = session.execute(delete(_TABLE).where(_TABLE.c.id.in_(oldest)))
        return int(cast(CursorResult[Any], result).rowcount)
