"""Secrets at rest: AES-256-GCM under the first key, any key decrypts, rotation re-encrypts."""

from __future__ import annotations

import base64
import os

import pytest
from sqlalchemy import select

from config_service.crypto import Cipher, DecryptError, key_id, parse_keys
from config_service.db import migrate
from config_service.db.engine import make_engine
from config_service.db.models import Provider, ProviderKey
from config_service.seed.apply import apply
from config_service.seed.env import parse_env
from config_service.snapshots.state import load_state
from config_service.snapshots.views import ERROR, evaluate
from config_service.store.database import Database
from config_service.store.records import load_record
from config_service.store.rotation import rotate

KEY = "sk-crypto-PLAINTEXT-0123456789abcdef"
SECRET = "bedrock-crypto-SECRET-0123456789"
OLD, NEW = os.urandom(32), os.urandom(32)


def env() -> dict[str, str]:
    return {
        "AIBRIDGE_OPENAI_KEY": KEY,
        "AIBRIDGE_PROVIDER_0_TYPE": "bedrock",
        "AIBRIDGE_PROVIDER_0_NAME": "aws",
        "AIBRIDGE_PROVIDER_0_BEDROCK_REGION": "us-east-1",
        "AIBRIDGE_PROVIDER_0_BEDROCK_ACCESS_KEY": "AKIACRYPTO0000000000",
        "AIBRIDGE_PROVIDER_0_BEDROCK_ACCESS_KEY_SECRET": SECRET,
    }


def database(url: str, *keys: bytes) -> Database:
    db = Database(make_engine(url), Cipher(tuple(keys)))
    migrate.upgrade(db.engine)
    return db


def stored(
    db: Database,
) -> tuple[list[tuple[str, str | None]], list[tuple[str | None, str | None]]]:
    with db.read() as session:
        keys = [(k.secret, k.secret_key_id) for k in session.execute(select(ProviderKey)).scalars()]
        settings = [
            (p.settings, p.settings_key_id) for p in session.execute(select(Provider)).scalars()
        ]
    return keys, settings


def test_round_trip_and_row_binding() -> None:
    """A value decrypts only with its own row's associated data."""
    cipher = Cipher((NEW,))
    value, kid = cipher.encrypt("s3cret", "provider_keys.secret:a")
    assert kid == key_id(NEW) and "s3cret" not in value
    assert cipher.decrypt(value, kid, "provider_keys.secret:a") == "s3cret"
    with pytest.raises(DecryptError):
        cipher.decrypt(value, kid, "provider_keys.secret:b")


def test_bad_keys_are_all_reported() -> None:
    """Every malformed AIBRIDGE_ENCRYPTION_KEYS entry is reported, never echoed."""
    keys, problems = parse_keys("not-base64!," + base64.b64encode(b"short").decode())
    assert keys == [] and len(problems) == 2
    assert all("not-base64" not in p for p in problems)


def test_secrets_are_encrypted_at_rest(database_url: str) -> None:
    """With a key set, no provider key or Bedrock secret is stored in plaintext."""
    db = database(database_url, NEW)
    apply(db, parse_env(env()))
    keys, settings = stored(db)
    assert all(KEY not in v and kid == key_id(NEW) for v, kid in keys)
    assert all(v is None or (SECRET not in v and kid == key_id(NEW)) for v, kid in settings)
    db.engine.dispose()


def test_rotation_re_encrypts_under_the_first_key(database_url: str) -> None:
    """After putting a new key first, rotate-keys re-encrypts everything and the old key can go."""
    db = database(database_url, OLD)
    apply(db, parse_env(env()))
    db.engine.dispose()
    rotating = database(database_url, NEW, OLD)
    result = rotate(rotating)
    assert result.rewritten == 2 and not result.failed  # one pool key, one Bedrock settings
    rotating.engine.dispose()
    new_only = database(database_url, NEW)
    state = load_state(new_only)
    secrets = {p.name: p for p in state.providers}
    assert secrets["openai"].keys[0].secret == KEY
    assert secrets["aws"].bedrock is not None and secrets["aws"].bedrock.access_key_secret == SECRET
    assert rotate(new_only).rewritten == 0
    new_only.engine.dispose()


def test_a_missing_key_is_reported_as_error_not_a_crash(database_url: str) -> None:
    """A provider whose key was removed too early is served with status ERROR naming the key id."""
    db = database(database_url, OLD)
    apply(db, parse_env(env()))
    db.engine.dispose()
    other = database(database_url, NEW)
    with other.read() as session:
        row = session.execute(select(Provider).where(Provider.name == "openai")).scalar_one()
        keys = list(session.execute(select(ProviderKey)).scalars())
        record = load_record(row, [k for k in keys if k.provider_id == row.id], other.cipher)
    status, reason = evaluate(record, allow_byok=True)
    assert status == ERROR and key_id(OLD) in reason and KEY not in reason
    other.engine.dispose()
