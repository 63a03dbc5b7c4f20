"""Fixtures of the resilience tests (real processes: `procs` in tests/fixtures/services.py;
the fake upstream `upstream` in tests/conftest.py): databases (SQLite file; PostgreSQL schema
when configured)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.databases import postgres_schema, schema_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'aibridge.db'}"


@pytest.fixture
def pg_schema(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(base URL, schema): a fresh PostgreSQL schema, dropped afterwards; skipped without one."""
    base = str(request.config.getoption("--database-url") or "")
    if not base:
        pytest.skip("PostgreSQL not configured (AIBRIDGE_TEST_DATABASE_URL)")
    with postgres_schema(base, prefix="aibr") as schema:
        yield base, schema


@pytest.fixture
def pg_url(pg_schema: tuple[str, str]) -> str:
    return schema_url(*pg_schema)
