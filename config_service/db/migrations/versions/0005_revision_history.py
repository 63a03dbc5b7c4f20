"""The revision counts in a history: a random id, replaced when the revision went backwards.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("revision") as batch:
        batch.add_column(sa.Column("history", sa.String(32), nullable=False, server_default=""))
    op.execute(
        sa.text("UPDATE revision SET history = :history").bindparams(history=secrets.token_hex(8))
    )


def downgrade() -> None:
    with op.batch_alter_table("revision") as batch:
        batch.drop_column("history")
