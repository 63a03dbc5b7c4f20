"""PostgreSQL LISTEN/NOTIFY between config-service replicas.

Every write transaction ends with `pg_notify(CHANNEL, '<revision>')`, delivered by
PostgreSQL only when (and if) the transaction commits. Each replica listens on a
dedicated connection and, on a notification, reloads its snapshot from the database:
the payload is a hint (the revision only, never data). After a lost connection the
listener reconnects with backoff, LISTENs again and resyncs, so a change committed
while it was away is not lost; the periodic revision check in server.py is the last
safety net against anything missed.
"""

from __future__ import annotations

import asyncio
import random
import time

from sqlalchemy.engine import make_url

from aibridge.logs import get_logger
from config_service.metrics import ConfigMetrics
from config_service.snapshots.hub import SnapshotHub
from config_service.store.database import NOTIFY_CHANNEL as CHANNEL

log = get_logger("aibridge.config.notify")


def psycopg_conninfo(database_url: str) -> str:
    """The SQLAlchemy URL as a libpq URI (keeps options such as search_path)."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def listen(
    database_url: str, hub: SnapshotHub, metrics: ConfigMetrics, replica_id: str
) -> None:
    """Run forever: LISTEN, reload on each notification, reconnect and resync on loss."""
    import psycopg  # only PostgreSQL deployments pay for the import

    conninfo = psycopg_conninfo(database_url)
    delay = 0.05
    first = True
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                conninfo,
                autocommit=True,
                connect_timeout=5,
                application_name=f"aibridge-listener-{replica_id}"[:63],
            ) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                if not first:
                    log.info("notification listener reconnected; resyncing")
                first = False
                delay = 0.05
                # Anything committed while we were not listening.
                if await hub.refresh_if_behind():
                    metrics.resyncs.labels(reason="reconnect").inc()
                async for notify in conn.notifies():
                    received = time.perf_counter()
                    try:
                        revision = int(notify.payload)
                    except ValueError:
                        revision = hub.revision + 1
                    # Not only a higher one: after a restore, or a new history started by
                    # another replica, the revision notified may be below ours.
                    if revision != hub.revision and await hub.refresh():
                        metrics.resyncs.labels(reason="notify").inc()
                        metrics.notification_lag.observe(time.perf_counter() - received)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "notification listener lost its connection; retrying",
                error=exc.__class__.__name__,
                retry_in_s=round(delay, 2),
            )
        await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter, not crypto
        delay = min(delay * 2, 5.0)
