"""Subscriber status keeps the first errors of a report and their count.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriber_status") as batch:
        batch.add_column(
            sa.Column("errors_total", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("subscriber_status") as batch:
        batch.drop_column("errors_total")
