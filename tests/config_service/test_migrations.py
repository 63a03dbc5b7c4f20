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


def test_the_interception_tables_have_their_indexes_and_come_down_again(
    database_url: str,
) -> None:
    """0003 creates the record tables with indexes for time, principal, provider and model;
    downgrading to 0002 removes them."""
    from alembic import command
    from alembic.config import Config

    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine)
        indexes = {tuple(ix["column_names"]) for ix in inspect(engine).get_indexes("interceptions")}
        assert {
            ("started_at", "id"),
            ("principal_id", "started_at"),
            ("provider_name", "started_at"),
            ("requested_model", "started_at"),
        } <= indexes
        assert "interception_tool_calls" in inspect(engine).get_table_names()
        cfg = Config()
        cfg.set_main_option("script_location", str(migrate.MIGRATIONS))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0002")
        tables = set(inspect(engine).get_table_names())
        assert not {"interceptions", "interception_tool_calls"} & tables
    finally:
        engine.dispose()
