"""Re-encrypt every stored secret under the first AIBRIDGE_ENCRYPTION_KEYS key.

Values encrypted with an older key, and values stored before encryption was turned
on, are rewritten; values already under the first key are left alone. Soft-deleted
rows are included (their secrets are still at rest). The plaintext does not change,
so the revision (and thus the snapshot version) does not move.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from config_service.crypto import DecryptError
from config_service.db.models import Provider, ProviderKey
from config_service.errors import FailedPrecondition
from config_service.rbac import SYSTEM
from config_service.store.database import Database
from config_service.store.records import key_aad, settings_aad


@dataclass(frozen=True)
class RotationResult:
    rewritten: int
    already_current: int
    failed: tuple[str, ...]  # row descriptions that could not be decrypted (no secret)


def rotate(db: Database) -> RotationResult:
    cipher = db.cipher
    primary = cipher.primary_id
    if primary is None:
        raise FailedPrecondition("AIBRIDGE_ENCRYPTION_KEYS is not set: nothing to encrypt with")
    rewritten = current = 0
    failed: list[str] = []
    with db.write() as session:
        for provider in session.execute(select(Provider)).scalars():
            if provider.settings is None:
                continue
            if provider.settings_key_id == primary:
                current += 1
                continue
            aad = settings_aad(provider.id)
            try:
                plain = cipher.decrypt(provider.settings, provider.settings_key_id, aad)
            except DecryptError as exc:
                failed.append(f"provider {provider.name} settings: {exc}")
                continue
            provider.settings, provider.settings_key_id = cipher.encrypt(plain, aad)
            rewritten += 1
        for key in session.execute(select(ProviderKey)).scalars():
            if key.secret_key_id == primary:
                current += 1
                continue
            try:
                plain = cipher.decrypt(key.secret, key.secret_key_id, key_aad(key.id))
            except DecryptError as exc:
                failed.append(f"provider key {key.id}: {exc}")
                continue
            key.secret, key.secret_key_id = cipher.encrypt(plain, key_aad(key.id))
            rewritten += 1
        if rewritten:
            revision = int(db.revision_in(session))
            db.audit(
                session,
                SYSTEM,
                "secrets.rotate",
                "secrets",
                "-",
                "all",
                revision,
                after={"rewritten": rewritten, "key_id": primary},
            )
    return RotationResult(rewritten, current, tuple(failed))
