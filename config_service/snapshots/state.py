"""The whole provider set at one revision, read in one consistent transaction.

This is what snapshots are built from. It is read with the service's own authority
(SYSTEM); scoping happens when a snapshot is rendered for a subject's scope.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select

from config_service.db.models import Principal, Provider, ProviderKey, Revision, Token
from config_service.rbac import Role
from config_service.store.database import Database
from config_service.store.records import ProviderRecord, load_record


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


def load_state(db: Database) -> State:
    with db.read() as session:
        revision = int(session.execute(select(Revision.revision)).scalar_one())
        rows = (
            session.execute(
                select(Provider).where(Provider.deleted.is_(False)).order_by(Provider.name)
            )
            .scalars()
            .all()
        )
        keys_by_provider: dict[str, list[ProviderKey]] = defaultdict(list)
        ids = [row.id for row in rows]
        if ids:
            keys = session.execute(
                select(ProviderKey)
                .where(ProviderKey.provider_id.in_(ids))
                .order_by(ProviderKey.provider_id, ProviderKey.created_at, ProviderKey.id)
            ).scalars()
            for key in keys:
                keys_by_provider[key.provider_id].append(key)
        # Secrets of disabled rows are never decrypted: no scope may see them.
        providers = tuple(
            load_record(row, keys_by_provider[row.id], db.cipher, decrypt_keys=row.enabled)
            for row in rows
        )
        token_rows = session.execute(
            select(Token, Principal)
            .join(Principal)
            .where(Token.revoked_at.is_(None))
            .order_by(Token.id)
        ).all()
        tokens = tuple(
            TokenEntry(t.id, t.token_hash, p.id, p.name, Role(p.role)) for t, p in token_rows
        )
    return State(revision=revision, providers=providers, tokens=tokens)
