"""Engine creation for SQLite (embedded default) and PostgreSQL (psycopg 3).

SQLite needs two things the driver does not do by default: foreign keys, and real
transactions around reads (pysqlite only opens a transaction before a write, so a
snapshot built from several SELECTs would not be consistent). Write transactions
start with BEGIN IMMEDIATE so two writers queue on the lock instead of failing.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url

from aibridge.files import FILE_MODE, open_private

SQLITE_BEGIN_OPTION = "aibridge_sqlite_begin"


def make_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_database_file(Path(parsed.database).expanduser())
        engine = create_engine(
            parsed, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs
        )
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    connect_args = {
        "connect_timeout": 5,
        "application_name": "aibridge-config-service",
        # A silent network partition is noticed by the kernel: keepalive probes on idle
        # connections, and unacknowledged data aborts the connection after 10 s.
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": 10_000,
    }
    return create_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        pool_timeout=5,
        connect_args=connect_args,
        **kwargs,
    )


def _private_database_file(path: Path) -> None:
    """The database file exists with mode 0600 before SQLite opens it: SQLite creates
    its -wal, -shm and -journal files with the database file's mode."""
    os.close(open_private(path, flags=0))
    for sidecar in ("-wal", "-shm", "-journal"):  # left by an older version, maybe 0644
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{sidecar}", FILE_MODE)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from pysqlite (see the module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "BEGIN"))


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
