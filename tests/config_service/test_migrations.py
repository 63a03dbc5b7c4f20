"""Migrations on SQLite and PostgreSQL alike."""

from __future__ import annotations

from sqlalchemy import inspect

from config_service.db import migrate
from config_service.db.engine import make_engine


def test_head_constant_is_alembics_head() -> None:
    """The fast-path HEAD constant names Alembic's newest migration (update it with each new one)."""
    assert migrate.head_revision() == migrate.HEAD


def test_upgrade_creates_the_schema_and_is_then_a_no_op(database_url: str) -> None:
    """An empty database is migrated to head; a second run changes nothing."""
    engine = make_engine(database_url)
    try:
        assert migrate.current_revision(engine) is None
        assert migrate.upgrade(engine) == (None, migrate.HEAD)
        tables = set(inspect(engine).get_table_names())
        assert {
            "providers",
            "provider_keys",
            "principals",
            "tokens",
            "revision",
            "audit_log",
        } <= tables
        assert migrate.upgrade(engine) == (migrate.HEAD, migrate.HEAD)
    finally:
        engine.dispose()
