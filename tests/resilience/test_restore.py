"""A database restored from an older backup: real processes, on SQLite and PostgreSQL.

The restore is what an operator does: SQLite's online backup copied back over the live
file; on PostgreSQL every table of the schema emptied and refilled from a copy taken
earlier (a logical restore), in one transaction. The daemons have seen versions the
restored database never reached; they must still take its state, so a token revoked
after the restore is refused by them.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from aibridge.config.v1 import provider_pb2 as pb
from aibridge.config.v1 import token_admin_service_pb2 as tpb
from tests.fixtures.processes import Proc
from tests.fixtures.upstream import FakeUpstream
from tests.fixtures.waits import eventually
from tests.resilience.harness import (
    ADMIN_MD,
    Admin,
    Procs,
    bridge_ready,
    bridge_url,
    free_port,
)


class Backup:
    """One backup of a database, taken now and restored later over the live one."""

    def take(self) -> None:
        raise NotImplementedError

    def restore(self) -> None:
        raise NotImplementedError


@dataclass
class SqliteBackup(Backup):
    live: Path
    copy: Path

    def _copy(self, source: Path, target: Path) -> None:
        with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
            src.backup(dst)

    def take(self) -> None:
        self._copy(self.live, self.copy)

    def restore(self) -> None:
        self._copy(self.copy, self.live)


class PostgresBackup(Backup):
    """Copies of the schema's tables in a schema of their own (dropped by `close`)."""

    def __init__(self, url: str) -> None:
        self.schema = str(make_url(url).query["options"]).split("search_path=")[1]
        self.copy = f"{self.schema}_bk"
        base = make_url(url).difference_update_query(["options"])
        self.engine = create_engine(base, isolation_level="AUTOCOMMIT", poolclass=NullPool)

    def _tables(self) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": self.schema}
            )
            return [str(row[0]) for row in rows]

    def take(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.copy}"'))
            for table in self._tables():
                copy = f'SELECT * FROM "{self.schema}"."{table}"'  # noqa: S608 - from pg_tables
                conn.execute(text(f'CREATE TABLE "{self.copy}"."{table}" AS {copy}'))

    def restore(self) -> None:
        tables = self._tables()
        # One transaction, as `pg_restore --single-transaction` restores.
        with self.engine.connect() as autocommit:
            conn = autocommit.execution_options(isolation_level="READ COMMITTED")
            with conn.begin():
                self._refill(conn, tables)

    def _refill(self, conn: Connection, tables: list[str]) -> None:
        listed = ", ".join(f'"{self.schema}"."{t}"' for t in tables)
        conn.execute(text(f"TRUNCATE {listed} CASCADE"))
        conn.execute(text(f'SET LOCAL search_path = "{self.schema}"'))  # the triggers' own
        conn.execute(text("SET LOCAL session_replication_role = replica"))  # FKs: any order
        for table in tables:
            saved = f'SELECT * FROM "{self.copy}"."{table}"'  # noqa: S608 - from pg_tables
            conn.execute(text(f'INSERT INTO "{self.schema}"."{table}" {saved}'))

    def close(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.copy}" CASCADE'))
        self.engine.dispose()


@pytest.fixture
def restorable(database_url: str, tmp_path: Path) -> Iterator[tuple[str, Backup]]:
    """(database URL, its backup) on each engine."""
    if database_url.startswith("sqlite"):
        live = Path(make_url(database_url).database or "")
        yield database_url, SqliteBackup(live, tmp_path / f"backup-{secrets.token_hex(4)}.db")
        return
    backup = PostgresBackup(database_url)
    try:
        yield database_url, backup
    finally:
        backup.close()


@dataclass
class Stack:
    procs: Procs
    url: str
    port: int
    service: Proc
    bridge: Proc
    upstream: FakeUpstream

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def admin(self) -> Admin:
        return Admin(self.target)

    async def answer(self, token: str) -> int:
        async with httpx.AsyncClient(timeout=10) as http:
            reply = await http.post(
                f"{bridge_url(self.bridge)}/up/v1/chat/completions",
                headers={"authorization": f"Bearer {token}"},
                json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
            )
            return reply.status_code


@pytest.fixture
async def stack(procs: Procs, restorable: tuple[str, Backup], upstream: FakeUpstream) -> Stack:
    url, _ = restorable
    port = free_port()
    service = await asyncio.to_thread(procs.config_service, url, port)
    admin = Admin(f"127.0.0.1:{port}")
    try:
        await admin.create_provider(
            "up", pb.PROVIDER_TYPE_OPENAI, f"{upstream.url}/v1/", ["sk-up-0000000000000000000"]
        )
        version = await admin.version()
    finally:
        await admin.close()
    bridge = await asyncio.to_thread(procs.bridge, f"127.0.0.1:{port}", "bridge-restore")
    await bridge_ready(bridge, version)
    return Stack(procs, url, port, service, bridge, upstream)


async def _move_past_the_backup(stack: Stack, admin: Admin) -> None:
    """Three more writes: the bridge applies versions the backup never reached."""
    for i in range(3):
        await admin.create_provider(
            f"later{i}",
            pb.PROVIDER_TYPE_OPENAI,
            "https://api.openai.com/v1",
            [f"sk-{i}" + "a" * 24],
        )
    await bridge_ready(stack.bridge, await admin.version())


async def _revoke(admin: Admin, name: str) -> None:
    listed = await admin.tokens.ListTokens(tpb.ListTokensRequest(), metadata=ADMIN_MD)
    for token in listed.tokens:
        if token.principal_name == name:
            await admin.tokens.RevokeToken(tpb.RevokeTokenRequest(id=token.id), metadata=ADMIN_MD)


async def test_a_token_revoked_after_a_restore_is_refused_by_the_bridge(
    stack: Stack, restorable: tuple[str, Backup]
) -> None:
    """A member token revoked after the live database was restored to an older backup is refused by a bridge that saw newer versions."""
    _, backup = restorable
    admin = await stack.admin()
    try:
        member = await admin.create_token("alice")
        await eventually(lambda: _served(stack, member, 200), within=10)
        await asyncio.to_thread(backup.take)
        await _move_past_the_backup(stack, admin)
        await asyncio.to_thread(backup.restore)
        await _revoke(admin, "alice")
        await eventually(lambda: _served(stack, member, 401), within=10)
    finally:
        await admin.close()


async def test_a_restore_made_while_the_config_service_was_down_reaches_the_bridge(
    stack: Stack, restorable: tuple[str, Backup]
) -> None:
    """A bridge reconnecting to a config service restarted on a database restored to an older backup takes its state, and a revocation made there reaches it."""
    _, backup = restorable
    admin = await stack.admin()
    try:
        member = await admin.create_token("alice")
        await eventually(lambda: _served(stack, member, 200), within=10)
        await asyncio.to_thread(backup.take)
        await _move_past_the_backup(stack, admin)
    finally:
        await admin.close()
    await asyncio.to_thread(stack.service.stop)
    await asyncio.to_thread(backup.restore)
    await asyncio.to_thread(stack.procs.config_service, stack.url, stack.port)
    admin = await stack.admin()
    try:
        # The bridge's known version is beyond the restored revision: a new history.
        await _revoke(admin, "alice")
        await eventually(lambda: _served(stack, member, 401), within=10)
        assert any(
            str(record.get("event", "")).startswith("the config service's database is in a new")
            for record in stack.bridge.records()
        )
    finally:
        await admin.close()


async def _served(stack: Stack, token: str, status: int) -> bool:
    return await stack.answer(token) == status


async def test_a_restore_reaches_a_bridge_on_another_replica_at_once(
    procs: Procs, pg_url: str, upstream: FakeUpstream
) -> None:
    """On PostgreSQL, a revocation made through one replica after a restore reaches a bridge following another replica by notification, without waiting for the periodic resync."""
    backup = PostgresBackup(pg_url)
    try:
        first = await asyncio.to_thread(procs.config_service, pg_url)
        admin = Admin(str(first.ready["target"]))
        try:
            await admin.create_provider(
                "up", pb.PROVIDER_TYPE_OPENAI, f"{upstream.url}/v1/", ["sk-up-0000000000000000000"]
            )
            member = await admin.create_token("alice")
            second = await asyncio.to_thread(
                procs.config_service, pg_url, data_dir="cs2", AIBRIDGE_RESYNC_INTERVAL="120s"
            )
            bridge = await asyncio.to_thread(procs.bridge, str(second.ready["target"]), "b-2")
            stack = Stack(procs, pg_url, 0, second, bridge, upstream)
            await eventually(lambda: _served(stack, member, 200), within=10)
            await asyncio.to_thread(backup.take)
            await _move_past_the_backup(stack, admin)
            await asyncio.to_thread(backup.restore)
            await _revoke(admin, "alice")
            await eventually(lambda: _served(stack, member, 401), within=5)
        finally:
            await admin.close()
    finally:
        backup.close()
