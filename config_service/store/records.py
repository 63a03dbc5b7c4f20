"""Providers as the service works with them: rows decoded and (when allowed) decrypted.

A `ProviderRecord` is immutable and holds everything any scope may need; the snapshot
views (`config_service.snapshots.views`) decide what each scope sees, and `audit_view` is
what the audit log records. Decoding never raises: a row that cannot be decrypted or
decoded becomes a record with `problems`, reported as status ERROR.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aibridge.masking import mask_secret
from aibridge.rulebook import BEDROCK_FIELDS, BedrockSpec
from config_service.crypto import Cipher, DecryptError
from config_service.db.models import Provider, ProviderKey

SETTINGS_VERSION = 1


def key_aad(key_id: str) -> str:
    return f"provider_keys.secret:{key_id}"


def settings_aad(provider_id: str) -> str:
    return f"providers.settings:{provider_id}"


def bedrock_to_json(bedrock: BedrockSpec) -> dict[str, Any]:
    """The settings column's JSON document (encrypted as a whole)."""
    return {
        "_type": "bedrock",
        "_version": SETTINGS_VERSION,
        **{name: getattr(bedrock, name) for name in BEDROCK_FIELDS},
    }


def bedrock_from_json(data: Any) -> BedrockSpec:
    """The Bedrock settings of a settings document; ValueError when it is not one."""
    if not isinstance(data, dict):
        raise ValueError("settings are not a JSON object")
    if data.get("_type") != "bedrock":
        raise ValueError(f"unknown settings _type {data.get('_type')!r}")
    if data.get("_version") != SETTINGS_VERSION:
        raise ValueError(f"unsupported settings _version {data.get('_version')!r}")
    values = {name: data.get(name, "") for name in BEDROCK_FIELDS}
    if not all(isinstance(v, str) for v in values.values()):
        raise ValueError("settings fields must be strings")
    return BedrockSpec(**values)


@dataclass(frozen=True)
class KeyRecord:
    id: str
    hint: str
    created_at: datetime
    # Plaintext; None when not loaded (non-bridge reads) or not decryptable.
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ProviderRecord:
    id: str
    name: str
    display_name: str
    type: str
    base_url: str
    enabled: bool
    created_at: datetime
    updated_at: datetime
    keys: tuple[KeyRecord, ...] = ()
    bedrock: BedrockSpec | None = None
    problems: tuple[str, ...] = ()
    etag: str = ""


def provider_etag(row: Provider, keys: list[ProviderKey]) -> str:
    """An opaque version of a provider: every write sets updated_at, and a key change also
    changes the key ids, so every write changes it. `keys` in pool order."""
    parts = [
        row.id,
        row.updated_at.astimezone(UTC).isoformat(),
        row.display_name,
        str(row.enabled),
        str(row.deleted),
        row.base_url,
        *(k.id for k in keys),
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]


def encode_settings(
    cipher: Cipher, provider_id: str, bedrock: BedrockSpec | None
) -> tuple[str | None, str | None]:
    """Settings column value and key id for a Bedrock record (None when no settings)."""
    if bedrock is None:
        return None, None
    return cipher.encrypt(
        json.dumps(bedrock_to_json(bedrock), sort_keys=True), settings_aad(provider_id)
    )


def encrypt_key(cipher: Cipher, key_id: str, secret: str) -> tuple[str, str | None, str]:
    """(stored value, encrypting key id, hint) for a new pool key."""
    stored, kid = cipher.encrypt(secret, key_aad(key_id))
    return stored, kid, mask_secret(secret)


def load_record(
    row: Provider, keys: list[ProviderKey], cipher: Cipher, decrypt_keys: bool = True
) -> ProviderRecord:
    """Decode a provider row and its keys (oldest first); decrypt keys when asked."""
    problems: list[str] = []
    bedrock: BedrockSpec | None = None
    if row.settings is not None:
        try:
            plain = cipher.decrypt(row.settings, row.settings_key_id, settings_aad(row.id))
            bedrock = bedrock_from_json(json.loads(plain))
        except DecryptError as exc:
            problems.append(f"settings: {exc}")
        except ValueError as exc:
            problems.append(f"settings: cannot decode ({exc})")
    key_records: list[KeyRecord] = []
    keys = sorted(keys, key=lambda k: (k.created_at, k.id))
    for key in keys:
        secret: str | None = None
        if not decrypt_keys:
            key_records.append(KeyRecord(key.id, key.hint, key.created_at))
            continue
        try:
            secret = cipher.decrypt(key.secret, key.secret_key_id, key_aad(key.id))
        except DecryptError as exc:
            problems.append(f"key {key.id}: {exc}")
        key_records.append(KeyRecord(key.id, key.hint, key.created_at, secret))
    return ProviderRecord(
        id=row.id,
        name=row.name,
        display_name=row.display_name or row.name,
        type=row.type,
        base_url=row.base_url,
        enabled=row.enabled,
        created_at=row.created_at,
        updated_at=row.updated_at,
        keys=tuple(key_records),
        bedrock=bedrock,
        problems=tuple(problems),
        etag=provider_etag(row, keys),
    )


def audit_view(record: ProviderRecord) -> dict[str, Any]:
    """A provider as the audit log records it: every secret masked."""
    view: dict[str, Any] = {
        "id": record.id,
        "name": record.name,
        "display_name": record.display_name,
        "type": record.type,
        "base_url": record.base_url,
        "enabled": record.enabled,
        "keys": [{"id": k.id, "hint": k.hint} for k in record.keys],
    }
    if record.bedrock is not None:
        b = record.bedrock
        view["bedrock"] = {
            "region": b.region,
            "model": b.model,
            "small_fast_model": b.small_fast_model,
            "role_arn": b.role_arn,
            "access_key": mask_secret(b.access_key),
            "access_key_secret": "***" if b.access_key_secret else "",
        }
    return view


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
