"""Subscriber status shared between replicas, so ListSubscribers shows the whole cluster.

Each replica publishes its own open streams (all of them, in one transaction, when they
changed and at least every heartbeat) and stamps its row in `replicas`. A replica whose
stamp is older than the freshness window is considered gone and its streams are not
listed. This is status, not configuration: it never bumps the revision.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select

from aibridge.limits import MAX_KEPT_ERRORS
from config_service.db.models import Replica, SubscriberStatus, utcnow
from config_service.rbac import Role
from config_service.store.database import Database
from config_service.subscribers import ProviderIssue, SubscriberState


@dataclass(frozen=True)
class RemoteSubscriber:
    replica_id: str
    state: SubscriberState


def publish(db: Database, replica_id: str, states: list[SubscriberState]) -> None:
    """Replace this replica's published streams with `states` and stamp the replica."""
    with db.write(lock_revision=False) as session:
        replica = session.get(Replica, replica_id)
        if replica is None:
            session.add(Replica(replica_id=replica_id, last_seen=utcnow()))
            session.flush()
        else:
            replica.last_seen = utcnow()
        session.execute(delete(SubscriberStatus).where(SubscriberStatus.replica_id == replica_id))
        if not states:
            return
        # One bulk INSERT of plain rows, not a unit of work over ORM objects: with every
        # subscriber ACKing every change, thousands of rows are republished after each one.
        session.execute(
            insert(SubscriberStatus),
            [
                dict(
                    replica_id=replica_id,
                    stream_id=s.stream_id,
                    node_id=s.node_id,
                    role=s.role.value,
                    peer=s.peer[:200],
                    connected_since=s.connected_since,
                    version_sent=s.version_sent,
                    version_acked=s.version_acked,
                    version_rejected=s.version_rejected,
                    errors=json.dumps([e.__dict__ for e in s.errors[:MAX_KEPT_ERRORS]]),
                    errors_total=s.errors_total,
                    error_detail=s.error_detail,
                    last_report_at=s.last_report_at,
                )
                for s in states
            ],
        )


def forget(db: Database, replica_id: str) -> None:
    """Remove this replica and its streams (clean shutdown)."""
    with db.write(lock_revision=False) as session:
        session.execute(delete(Replica).where(Replica.replica_id == replica_id))


def others(db: Database, replica_id: str, fresh: timedelta) -> list[RemoteSubscriber]:
    """Streams published by the other replicas still alive within `fresh`."""
    cutoff: datetime = utcnow() - fresh
    with db.read() as session:
        rows = session.execute(
            select(SubscriberStatus)
            .join(Replica)
            .where(Replica.replica_id != replica_id, Replica.last_seen >= cutoff)
        ).scalars()
        return [
            RemoteSubscriber(
                row.replica_id,
                SubscriberState(
                    stream_id=row.stream_id,
                    node_id=row.node_id,
                    role=Role(row.role),
                    principal_id="",
                    peer=row.peer,
                    connected_since=row.connected_since,
                    version_sent=row.version_sent,
                    version_acked=row.version_acked,
                    version_rejected=row.version_rejected,
                    errors=[ProviderIssue(**e) for e in json.loads(row.errors)][:MAX_KEPT_ERRORS],
                    errors_total=row.errors_total,
                    error_detail=row.error_detail,
                    last_report_at=row.last_report_at,
                ),
            )
            for row in rows
        ]
