"""Alembic environment: always run with a connection handed in by config_service.db.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from config_service.db.models import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through `aibridge migrate`, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
