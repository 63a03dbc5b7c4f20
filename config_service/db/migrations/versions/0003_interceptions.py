"""Interception records (DESIGN §11): one row per client request the bridge answered, and
the tool calls of each; indexes for the time range, principal, provider and model.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from config_service.db.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "interceptions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("first_byte_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=False),
        sa.Column("provider_name", sa.String(200), nullable=False),
        sa.Column("provider_type", sa.String(32), nullable=False),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("requested_model", sa.String(200), nullable=False),
        sa.Column("served_model", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("principal_id", sa.String(36), nullable=False),
        sa.Column("principal_name", sa.String(200), nullable=False),
        sa.Column("token_id", sa.String(36), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("user_agent", sa.String(512), nullable=False),
        sa.Column("session_id", sa.String(200), nullable=False),
        sa.Column("credential_kind", sa.String(16), nullable=False),
        sa.Column("credential_hint", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_read_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_write_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("proxied", sa.Boolean(), nullable=False),
        sa.Column("streamed", sa.Boolean(), nullable=False),
        sa.Column("tool_call_count", sa.Integer(), nullable=False),
    )
    op.create_index("interceptions_started", "interceptions", ["started_at", "id"])
    op.create_index("interceptions_principal", "interceptions", ["principal_id", "started_at"])
    op.create_index("interceptions_provider", "interceptions", ["provider_name", "started_at"])
    op.create_index("interceptions_model", "interceptions", ["requested_model", "started_at"])
    op.create_table(
        "interception_tool_calls",
        sa.Column(
            "interception_id",
            sa.String(36),
            sa.ForeignKey("interceptions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("call_id", sa.String(200), nullable=False),
        sa.Column("arguments", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("interception_tool_calls")
    op.drop_index("interceptions_model", "interceptions")
    op.drop_index("interceptions_provider", "interceptions")
    op.drop_index("interceptions_principal", "interceptions")
    op.drop_index("interceptions_started", "interceptions")
    op.drop_table("interceptions")
