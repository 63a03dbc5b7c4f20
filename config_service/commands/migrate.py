"""`aibridge migrate`: apply the database migrations and exit."""

from __future__ import annotations

import sys

from config_service.commands.common import DATABASE_SETTINGS, load, parser
from config_service.db import migrate
from config_service.db.engine import make_engine
from config_service.store.database import is_connection_error


def main(argv: list[str], prog: str = "aibridge migrate") -> int:
    args = parser(
        prog, "Bring the database schema to the latest migration.", DATABASE_SETTINGS
    ).parse_args(argv)
    settings = load(args)
    if settings is None:
        return 2
    engine = make_engine(settings.database_url)
    try:
        before, after = migrate.upgrade(engine)
    except Exception as exc:
        if is_connection_error(exc):
            print(
                f"aibridge migrate: cannot reach the database: {exc.__class__.__name__}",
                file=sys.stderr,
            )
            return 1
        raise
    finally:
        engine.dispose()
    if before == after:
        print(f"database is up to date (migration {after})", file=sys.stderr)
    else:
        print(f"database migrated from {before or 'empty'} to {after}", file=sys.stderr)
    return 0
