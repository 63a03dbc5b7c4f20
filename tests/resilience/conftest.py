"""Fixtures of the resilience tests: real processes (killed at teardown, also on failure),
a raw fake upstream, and databases (SQLite file; PostgreSQL schema when configured)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.resilience.harness import Procs, RawUpstream


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    running = Procs(tmp_path)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
async def upstream() -> AsyncIterator[RawUpstream]:
    server = await RawUpstream().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'aibridge.db'}"


@pytest.fixture
def pg_schema(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(base URL, schema): a fresh PostgreSQL schema, dropped afterwards; skipped without one."""
    base = str(request.config.getoption("--database-url") or "")
    if not base:
        pytest.skip("PostgreSQL not configured (AIBRIDGE_TEST_DATABASE_URL)")
    schema = f"aibr_{secrets.token_hex(6)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield base, schema
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND query ILIKE :pattern"
                ),
                {"pattern": f"%{schema}%"},
            )
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def schema_url(base: str, schema: str, port: int | None = None) -> str:
    """The base URL on `schema` (and, when given, through a proxy on `port`)."""
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    if port is not None:
        url = url.set(host="127.0.0.1", port=port)
    return url.render_as_string(hide_password=False)


@pytest.fixture
def pg_url(pg_schema: tuple[str, str]) -> str:
    return schema_url(*pg_schema)
