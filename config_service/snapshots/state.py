"""The whole provider set at one revision, read in one consistent transaction.

This is what snapshots are built from. It is read with the service's own authority
(SYSTEM); scoping happens when a snapshot is rendered for a subject's scope.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from config_service.db.models import Principal, Revision, Token
from config_service.rbac import Role
from config_service.store.database import Database
from config_service.store.records import ProviderRecord, live_providers, load_record


@dataclass(frozen=True)
class TokenEntry:
    token_id: str
    sha256: str
    principal_id: str
    principal_name: str
    role: Role


@dataclass(frozen=True)
class State:
    history: str  # the database's history the revision counts in
    revision: int
    providers: tuple[ProviderRecord, ...]  # live rows, sorted by name
    tokens: tuple[TokenEntry, ...]  # every live token, all roles


def load_state(db: Database) -> State:
    with db.read() as session:
        history, revision = session.execute(select(Revision.history, Revision.revision)).one()
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
    return State(history=str(history), revision=int(revision), providers=providers, tokens=tokens)
