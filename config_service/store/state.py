"""The whole provider set at one revision, read in one consistent transaction.

This is what snapshots are built from. It is read with the service's own authority
(SYSTEM); scoping happens when a snapshot is rendered for a subject's scope.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from config_service.db.models import Principal, Provider, ProviderKey, Revision, Token
from config_service.rbac import Role
from config_service.records import ProviderRecord, load_record
from config_service.store.database import Database


@dataclass(frozen=True)
class TokenEntry:
    token_id: str
    sha256: str
    principal_id: str
    principal_name: str
    role: Role


@dataclass(frozen=True)
class State:
    revision: int
    providers: tuple[ProviderRecord, ...]  # live rows, sorted by name
    tokens: tuple[TokenEntry, ...]  # every live token, all roles


def live_providers(session: Session) -> tuple[list[Provider], dict[str, list[ProviderKey]]]:
    """The live (not deleted) provider rows sorted by name, and their keys by provider id.

    Order is decided here, by code point, never by SQL ORDER BY on a text column: that
    follows the database's collation (en_US sorts 'openai' before 'open-router', code
    point order the other way round), and the snapshot's order is part of the contract.
    Key order within a provider is the pool order, applied by `load_record`.
    """
    rows = list(session.execute(select(Provider).where(Provider.deleted.is_(False))).scalars())
    rows.sort(key=lambda row: row.name)
    keys: dict[str, list[ProviderKey]] = {row.id: [] for row in rows}
    if rows:
        for key in session.execute(
            select(ProviderKey).where(ProviderKey.provider_id.in_(list(keys)))
        ).scalars():
            keys[key.provider_id].append(key)
    return rows, keys


def load_state(db: Database) -> State:
    with db.read() as session:
        revision = int(session.execute(select(Revision.revision)).scalar_one())
        rows, keys = live_providers(session)
        # Secrets of disabled rows are never decrypted: no scope may see them.
        providers = tuple(
            load_record(row, keys[row.id], db.cipher, decrypt_keys=row.enabled) for row in rows
        )
        token_rows = session.execute(
            select(Token, Principal).join(Principal).where(Token.revoked_at.is_(None))
        ).all()
        tokens = tuple(
            sorted(
                (TokenEntry(t.id, t.token_hash, p.id, p.name, Role(p.role)) for t, p in token_rows),
                key=lambda entry: entry.token_id,
            )
        )
    return State(revision=revision, providers=providers, tokens=tokens)
