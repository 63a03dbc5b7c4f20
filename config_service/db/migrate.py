"""Run the Alembic migrations programmatically (start-up and `aibridge migrate`).

On PostgreSQL an advisory lock serializes replicas that start at the same time.
Alembic is imported only when the schema is behind HEAD: an up-to-date database is
recognised with one query, which keeps start-up fast (tests check HEAD against Alembic).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# Arbitrary constant shared by every replica: "aibridge" in ASCII, truncated.
MIGRATE_LOCK_ID = 0x616962726964
# The newest migration; tests/config_service/test_migrations.py checks it is Alembic's head.
HEAD = "0005"


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    """Alembic's own idea of the newest migration."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The applied migration, read with plain SQL (None on an empty database)."""
    try:
        with engine.connect() as conn:
            value = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError as exc:
        if "alembic_version" in str(exc.orig):
            return None
        raise
    return str(value) if value is not None else None


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to head; return (before, after) migration revisions."""
    current = current_revision(engine)
    if current == HEAD:
        return current, HEAD
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    cfg = _config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATE_LOCK_ID})
        before = MigrationContext.configure(conn).get_current_revision()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return before, head_revision()
