"""Typed ORM models (DESIGN §5). The Alembic migrations are the schema's source of truth;
these mirror them for queries. The DB-level checks that back the provider rulebook
(`aibridge.rulebook`: the name pattern, the type list, the key limit) are spelled here
per engine from the rulebook's constants, and the migrations create them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedColumn, mapped_column, relationship

from aibridge.rulebook import MAX_KEYS, MAX_NAME_LENGTH, NAME_PATTERN, TYPE_NAMES

PROVIDER_TYPES = TYPE_NAMES
ROLES = ("owner", "auditor", "member", "bridge", "proxy")

# The name pattern per engine: SQLite has no regex operator, so there it is spelled with GLOB.
NAME_CHECK = {
    "postgresql": f"name ~ '{NAME_PATTERN}'",
    "sqlite": (
        "name <> '' AND name NOT GLOB '*[^a-z0-9-]*' AND name NOT GLOB '-*' "
        "AND name NOT GLOB '*-' AND name NOT GLOB '*--*'"
    ),
}
# The key limit as a trigger (a CHECK cannot count rows); the trigger keeps its first name.
MAX_KEYS_SQL = {
    "postgresql": f"""
CREATE FUNCTION provider_keys_max_5() RETURNS trigger AS $$
BEGIN
  IF (SELECT count(*) FROM provider_keys WHERE provider_id = NEW.provider_id) >= {MAX_KEYS} THEN
    RAISE EXCEPTION 'provider_keys: at most {MAX_KEYS} keys per provider'
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER provider_keys_max_5 BEFORE INSERT ON provider_keys
  FOR EACH ROW EXECUTE FUNCTION provider_keys_max_5();
""",  # noqa: S608 (MAX_KEYS is an int constant, not input)
    "sqlite": f"""
CREATE TRIGGER provider_keys_max_5 BEFORE INSERT ON provider_keys
WHEN (SELECT count(*) FROM provider_keys WHERE provider_id = NEW.provider_id) >= {MAX_KEYS}
BEGIN SELECT RAISE(ABORT, 'provider_keys: at most {MAX_KEYS} keys per provider'); END;
""",  # noqa: S608 (MAX_KEYS is an int constant, not input)
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every engine (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


UUIDPk = Annotated[str, mapped_column(String(36), primary_key=True, default=new_id)]
Timestamp = Annotated[datetime, mapped_column(UTCDateTime(), nullable=False, default=utcnow)]


def owned_by(parent: str, length: int = 36, *, key: bool = False) -> MappedColumn[Any]:
    """The id of the row this one belongs to (`parent`: "table.column"), gone with it; `key`:
    the first part of this row's primary key, else an indexed column."""
    fk = ForeignKey(parent, ondelete="CASCADE")
    return mapped_column(String(length), fk, primary_key=key, index=not key)


def ordinal(kind: type[Integer]) -> MappedColumn[Any]:
    """The second part of a child row's primary key: a number given, not generated."""
    return mapped_column(kind, primary_key=True, autoincrement=False)


class Base(DeclarativeBase):
    pass


class Provider(Base):
    __tablename__ = "providers"

    id: Mapped[UUIDPk]
    type: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    base_url: Mapped[str] = mapped_column(Text, default="")
    # Type-specific settings as (optionally encrypted) JSON; NULL when there are none.
    settings: Mapped[str | None] = mapped_column(Text, nullable=True)
    settings_key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[Timestamp]
    updated_at: Mapped[Timestamp]

    keys: Mapped[list[ProviderKey]] = relationship(
        back_populates="provider",
        order_by="(ProviderKey.created_at, ProviderKey.id)",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    __table_args__ = (
        Index(
            "providers_name_live_unique",
            "name",
            unique=True,
            sqlite_where=text("deleted = 0"),
            postgresql_where=text("deleted = false"),
        ),
    )


class ProviderKey(Base):
    __tablename__ = "provider_keys"

    id: Mapped[UUIDPk]
    provider_id: Mapped[str] = owned_by("providers.id")
    secret: Mapped[str] = mapped_column(Text)
    secret_key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Masked form kept beside the secret so non-bridge reads never decrypt.
    hint: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[Timestamp]

    provider: Mapped[Provider] = relationship(back_populates="keys")


class Principal(Base):
    __tablename__ = "principals"

    id: Mapped[UUIDPk]
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[Timestamp]

    tokens: Mapped[list[Token]] = relationship(back_populates="principal")


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[UUIDPk]
    principal_id: Mapped[str] = owned_by("principals.id")
    # Lower-case hex SHA-256 of the secret; the secret itself is never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[Timestamp]
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    principal: Mapped[Principal] = relationship(back_populates="tokens")


class Revision(Base):
    """One row: the revision counter, bumped in the same transaction as every change, and
    the history it counts in (a random id, replaced when the revision went backwards)."""

    __tablename__ = "revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)
    history: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[Timestamp]


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[Timestamp]
    actor_id: Mapped[str] = mapped_column(String(36))
    actor_name: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(36))
    resource_name: Mapped[str] = mapped_column(String(200), default="")
    revision: Mapped[int] = mapped_column(BigInteger)
    # JSON with every secret masked.
    before: Mapped[str | None] = mapped_column(Text, nullable=True)
    after: Mapped[str | None] = mapped_column(Text, nullable=True)


class Replica(Base):
    """A config-service replica and when it last published its subscribers."""

    __tablename__ = "replicas"

    replica_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_seen: Mapped[Timestamp]


class SubscriberStatus(Base):
    """One watch stream as its replica last published it (for cluster-wide ListSubscribers)."""

    __tablename__ = "subscriber_status"

    replica_id: Mapped[str] = owned_by("replicas.replica_id", 200, key=True)
    stream_id: Mapped[int] = ordinal(BigInteger)
    node_id: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    peer: Mapped[str] = mapped_column(String(200))
    connected_since: Mapped[Timestamp]
    version_sent: Mapped[str] = mapped_column(String(40))
    version_acked: Mapped[str] = mapped_column(String(40))
    version_rejected: Mapped[str] = mapped_column(String(40))
    errors: Mapped[str] = mapped_column(Text)  # JSON list of {provider_name, message}
    errors_total: Mapped[int] = mapped_column(Integer, server_default="0")
    error_detail: Mapped[str] = mapped_column(Text)
    last_report_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Interception(Base):
    """One client request the bridge answered (DESIGN §11); written only by the bridge role."""

    __tablename__ = "interceptions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # UUIDv7: time-ordered
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    first_byte_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime())
    provider_name: Mapped[str] = mapped_column(String(200))
    provider_type: Mapped[str] = mapped_column(String(32))
    route: Mapped[str] = mapped_column(String(200))
    requested_model: Mapped[str] = mapped_column(String(200))
    served_model: Mapped[str] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(32))
    status_code: Mapped[int] = mapped_column(Integer)
    principal_id: Mapped[str] = mapped_column(String(36))
    principal_name: Mapped[str] = mapped_column(String(200))
    token_id: Mapped[str] = mapped_column(String(36))
    client: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str] = mapped_column(String(512))
    session_id: Mapped[str] = mapped_column(String(200))
    credential_kind: Mapped[str] = mapped_column(String(16))
    credential_hint: Mapped[str] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger)
    prompt: Mapped[str] = mapped_column(Text)
    proxied: Mapped[bool] = mapped_column(Boolean)
    streamed: Mapped[bool] = mapped_column(Boolean)
    tool_call_count: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        Index("interceptions_started", "started_at", "id"),
        Index("interceptions_principal", "principal_id", "started_at"),
        Index("interceptions_provider", "provider_name", "started_at"),
        Index("interceptions_model", "requested_model", "started_at"),
    )


class InterceptionToolCall(Base):
    """A tool call the model made, in the order of its answer."""

    __tablename__ = "interception_tool_calls"

    interception_id: Mapped[str] = owned_by("interceptions.id", key=True)
    position: Mapped[int] = ordinal(Integer)
    name: Mapped[str] = mapped_column(String(200))
    call_id: Mapped[str] = mapped_column(String(200))
    arguments: Mapped[str] = mapped_column(Text)
