"""Shared fixtures: a fresh database per test on SQLite and (when configured) PostgreSQL,
an in-process config service on port 0, config-service subprocesses, and the suite's fake
upstream.

PostgreSQL: set AIBRIDGE_TEST_DATABASE_URL (or --database-url), e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/test; each test gets its own schema,
dropped afterwards. Without it the PostgreSQL variants are skipped.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.fixtures.databases import postgres_schema, schema_url
from tests.fixtures.upstream import FakeUpstream

pytest_plugins = ["tests.fixtures.services", "tests.fixtures.otlp"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database-url",
        default=os.environ.get("AIBRIDGE_TEST_DATABASE_URL", ""),
        help="PostgreSQL URL for the database tests (env AIBRIDGE_TEST_DATABASE_URL)",
    )
    parser.addoption("--run-slow", action="store_true", help="run the long variants too")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long variant: pass --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _postgres_base(config: pytest.Config) -> str:
    return str(config.getoption("--database-url") or "")


@contextmanager
def fresh_database(kind: str, config: pytest.Config, tmp: Path) -> Iterator[str]:
    """A fresh, empty database of `kind`: a SQLite file in `tmp`, or a new PostgreSQL schema
    dropped afterwards (skips when PostgreSQL is not configured)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'aibridge.db'}"
        return
    base = _postgres_base(config)
    if not base:
        pytest.skip("PostgreSQL not configured (AIBRIDGE_TEST_DATABASE_URL)")
    with postgres_schema(base) as schema:
        yield schema_url(base, schema)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL schema dropped afterwards."""
    with fresh_database(request.param, request.config, tmp_path) as url:
        yield url


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    """The suite's one fake upstream (tests/fixtures/upstream.py), on port 0."""
    server = await FakeUpstream().start()
    try:
        yield server
    finally:
        await server.stop()
