"""Authentication of gRPC callers: `authorization: Bearer <token>` → Subject.

Tokens are looked up by SHA-256 in the hub's in-memory index (refreshed with every
snapshot, so a revocation takes effect as fast as any other change); a miss falls
back to the database so tokens created by another process work at once.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from aibridge.masking import sha256_hex
from config_service.errors import Unauthenticated
from config_service.rbac import Subject
from config_service.snapshots.hub import SnapshotHub
from config_service.store import tokens
from config_service.store.database import Database

Metadata = Iterable[tuple[str, str | bytes]]


def bearer_token(metadata: Metadata) -> str:
    for key, value in metadata:
        if key == "authorization":
            raw = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = raw.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
            return token.strip()
    raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")


class Authenticator:
    def __init__(self, hub: SnapshotHub, db: Database) -> None:
        self._hub = hub
        self._db = db

    async def authenticate(self, context: grpc.aio.ServicerContext[object, object]) -> Subject:
        return await self.authenticate_metadata(context.invocation_metadata() or ())

    async def authenticate_metadata(self, metadata: Metadata) -> Subject:
        """The subject of the call's `authorization` metadata (read before its message)."""
        digest = sha256_hex(bearer_token(metadata))
        subject = self._hub.subject_for(digest)
        if subject is None:
            subject = await self._db.call(tokens.lookup, self._db, digest)
        if subject is None:
            raise Unauthenticated("unknown or revoked token")
        return subject
