"""Subscriber status shared between replicas: who is watching which replica, on which version.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from config_service.db.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("replica_id", sa.String(200), primary_key=True),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "subscriber_status",
        sa.Column(
            "replica_id",
            sa.String(200),
            sa.ForeignKey("replicas.replica_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("stream_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("node_id", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("peer", sa.String(200), nullable=False),
        sa.Column("connected_since", UTCDateTime(), nullable=False),
        sa.Column("version_sent", sa.String(40), nullable=False),
        sa.Column("version_acked", sa.String(40), nullable=False),
        sa.Column("version_rejected", sa.String(40), nullable=False),
        sa.Column("errors", sa.Text(), nullable=False),
        sa.Column("error_detail", sa.Text(), nullable=False),
        sa.Column("last_report_at", UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("subscriber_status")
    op.drop_table("replicas")
