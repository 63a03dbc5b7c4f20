"""Seeding from the environment at boot: insert-only, idempotent, drift fails start-up."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from config_service.crypto import Cipher
from config_service.db import migrate
from config_service.db.engine import make_engine
from config_service.db.models import AuditEntry, Provider, ProviderKey
from config_service.seed.apply import SeedConflict, apply
from config_service.seed.env import parse_env
from config_service.store.database import Database
from config_service.store.records import load_record

KEY_A = "sk-seed-AAAAAAAAAAAAAAAAAAAAAAAA"
KEY_B = "sk-seed-BBBBBBBBBBBBBBBBBBBBBBBB"


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(make_engine(database_url), Cipher())
    migrate.upgrade(database.engine)
    yield database  # type: ignore[misc]
    database.engine.dispose()


def seed(db: Database, **env: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    outcome = apply(db, parse_env(env))
    return outcome.created, outcome.unchanged, outcome.skipped_deleted


def providers(db: Database) -> dict[str, Provider]:
    with db.read() as session:
        return {p.name: p for p in session.execute(select(Provider)).scalars()}


def keys_of(db: Database, name: str) -> list[str]:
    with db.read() as session:
        row = session.execute(
            select(Provider).where(Provider.name == name, Provider.deleted.is_(False))
        ).scalar_one()
        keys = (
            session.execute(select(ProviderKey).where(ProviderKey.provider_id == row.id))
            .scalars()
            .all()
        )
        record = load_record(row, list(keys), db.cipher)
    return [k.secret or "" for k in record.keys]


def test_new_providers_are_inserted_with_their_keys_in_env_order(db: Database) -> None:
    """A provider missing from the database is created with its keys, pool order = env order."""
    created, _, _ = seed(
        db,
        AIBRIDGE_PROVIDER_0_TYPE="openai",
        AIBRIDGE_PROVIDER_0_NAME="team-a",
        AIBRIDGE_PROVIDER_0_KEYS=f"{KEY_B},{KEY_A}",
    )
    assert created == ("team-a",)
    assert keys_of(db, "team-a") == [KEY_B, KEY_A]


def test_seeding_bumps_the_revision_once(db: Database) -> None:
    """Inserting several providers bumps the revision by exactly one."""
    before = db.revision()
    seed(db, AIBRIDGE_OPENAI_KEY=KEY_A, AIBRIDGE_ANTHROPIC_KEY=KEY_B)
    assert db.revision() == before + 1


def test_restart_with_the_same_env_is_a_no_op(db: Database) -> None:
    """Seeding twice with the same env changes nothing the second time, not even the revision."""
    env = {"AIBRIDGE_OPENAI_KEY": KEY_A}
    seed(db, **env)
    revision = db.revision()
    created, unchanged, _ = seed(db, **env)
    assert (created, unchanged) == ((), ("openai",))
    assert db.revision() == revision


def test_rotated_env_key_is_not_drift_and_keeps_the_stored_key(db: Database) -> None:
    """A changed key in the env is not drift: the database keeps its key (rotate through the API)."""
    seed(db, AIBRIDGE_OPENAI_KEY=KEY_A)
    _, unchanged, _ = seed(db, AIBRIDGE_OPENAI_KEY=KEY_B)
    assert unchanged == ("openai",)
    assert keys_of(db, "openai") == [KEY_A]


def test_a_changed_env_key_is_reported_as_kept_with_how_to_rotate(db: Database) -> None:
    """An env key that differs from the stored one yields one sentence naming provider and CLI, no key."""
    seed(db, AIBRIDGE_OPENAI_KEY=KEY_A)
    assert apply(db, parse_env({"AIBRIDGE_OPENAI_KEY": KEY_A})).keys_kept == ()
    (sentence,) = apply(db, parse_env({"AIBRIDGE_OPENAI_KEY": KEY_B})).keys_kept
    assert "provider 'openai'" in sentence and "AIBRIDGE_OPENAI_*" in sentence
    assert "stored keys are kept" in sentence
    assert "aibridge providers keys add openai --from-env" in sentence
    assert KEY_A not in sentence and KEY_B not in sentence


def test_base_url_drift_fails_naming_the_provider_and_the_fix(db: Database) -> None:
    """A different base URL in the env fails start-up with the provider name and how to fix it."""
    seed(db, AIBRIDGE_OPENAI_KEY=KEY_A)
    with pytest.raises(SeedConflict) as err:
        seed(db, AIBRIDGE_OPENAI_KEY=KEY_A, AIBRIDGE_OPENAI_BASE_URL="https://other.example/v1/")
    message = str(err.value)
    assert "'openai'" in message
    assert "aibridge providers update openai" in message
    assert "base_url" in message
    assert KEY_A not in message


def test_type_drift_fails(db: Database) -> None:
    """A provider whose env type differs from the stored type fails start-up."""
    seed(
        db,
        AIBRIDGE_PROVIDER_0_TYPE="openai",
        AIBRIDGE_PROVIDER_0_NAME="x",
        AIBRIDGE_PROVIDER_0_BASE_URL="https://api.example.com/v1/",
    )
    with pytest.raises(SeedConflict, match="type"):
        seed(
            db,
            AIBRIDGE_PROVIDER_0_TYPE="openrouter",
            AIBRIDGE_PROVIDER_0_NAME="x",
            AIBRIDGE_PROVIDER_0_BASE_URL="https://api.example.com/v1/",
        )


def test_bedrock_region_drift_fails_but_credentials_do_not(db: Database) -> None:
    """Bedrock region is compared on restart; the access key pair is not."""
    base = {
        "AIBRIDGE_PROVIDER_0_TYPE": "bedrock",
        "AIBRIDGE_PROVIDER_0_NAME": "aws",
        "AIBRIDGE_PROVIDER_0_BEDROCK_REGION": "us-east-1",
        "AIBRIDGE_PROVIDER_0_BEDROCK_ACCESS_KEY": "AKIAAAAAAAAAAAAAAAAA",
        "AIBRIDGE_PROVIDER_0_BEDROCK_ACCESS_KEY_SECRET": "secret-one-0123456789",
    }
    seed(db, **base)
    _, unchanged, _ = seed(
        db, **{**base, "AIBRIDGE_PROVIDER_0_BEDROCK_ACCESS_KEY_SECRET": "secret-two-0123456789"}
    )
    assert unchanged == ("aws",)
    with pytest.raises(SeedConflict, match="bedrock_region"):
        seed(db, **{**base, "AIBRIDGE_PROVIDER_0_BEDROCK_REGION": "eu-west-1"})


def test_bedrock_model_drift_fails(db: Database) -> None:
    """A changed Bedrock model in the env is drift."""
    base = {
        "AIBRIDGE_PROVIDER_0_TYPE": "bedrock",
        "AIBRIDGE_PROVIDER_0_BEDROCK_REGION": "us-east-1",
    }
    seed(db, **base)
    with pytest.raises(SeedConflict, match="bedrock_model"):
        seed(db, **{**base, "AIBRIDGE_PROVIDER_0_BEDROCK_MODEL": "anthropic.other-v1:0"})


def test_soft_deleted_provider_is_never_resurrected(db: Database) -> None:
    """A provider deleted through the API is not re-created from the env on restart."""
    seed(db, AIBRIDGE_OPENAI_KEY=KEY_A)
    with db.write() as session:
        session.execute(update(Provider).values(deleted=True, enabled=False))
    created, _, skipped = seed(db, AIBRIDGE_OPENAI_KEY=KEY_A)
    assert (created, skipped) == ((), ("openai",))
    assert all(p.deleted for p in providers(db).values())


def test_rows_not_in_env_are_never_touched(db: Database) -> None:
    """Seeding leaves providers that are not in the env exactly as they are."""
    seed(db, AIBRIDGE_ANTHROPIC_KEY=KEY_B)
    before = providers(db)["anthropic"]
    seed(db, AIBRIDGE_OPENAI_KEY=KEY_A)
    after = providers(db)["anthropic"]
    assert (before.updated_at, before.base_url, before.enabled) == (
        after.updated_at,
        after.base_url,
        after.enabled,
    )
    assert keys_of(db, "anthropic") == [KEY_B]


def test_disabled_matching_row_is_left_disabled(db: Database) -> None:
    """A provider an admin disabled stays disabled across restarts with the same env."""
    seed(db, AIBRIDGE_OPENAI_KEY=KEY_A)
    with db.write() as session:
        session.execute(update(Provider).values(enabled=False))
    seed(db, AIBRIDGE_OPENAI_KEY=KEY_A)
    assert providers(db)["openai"].enabled is False


def test_empty_env_touches_nothing(db: Database) -> None:
    """With no provider env at all, seeding does not open a write or move the revision."""
    revision = db.revision()
    assert seed(db) == ((), (), ())
    assert db.revision() == revision


def test_every_conflict_is_reported_at_once_and_nothing_is_inserted(db: Database) -> None:
    """Two drifted providers are both reported, and a new provider in the same env is not inserted."""
    seed(db, AIBRIDGE_OPENAI_KEY=KEY_A, AIBRIDGE_ANTHROPIC_KEY=KEY_B)
    with pytest.raises(SeedConflict) as err:
        seed(
            db,
            AIBRIDGE_OPENAI_KEY=KEY_A,
            AIBRIDGE_OPENAI_BASE_URL="https://a.example/",
            AIBRIDGE_ANTHROPIC_KEY=KEY_B,
            AIBRIDGE_ANTHROPIC_BASE_URL="https://b.example/",
            AIBRIDGE_PROVIDER_0_TYPE="openai",
            AIBRIDGE_PROVIDER_0_NAME="brand-new",
        )
    assert len(err.value.problems) == 2
    assert "brand-new" not in providers(db)


def test_seeding_is_audited_with_masked_keys(db: Database) -> None:
    """Each seeded provider gets an audit entry, and no audit row holds a plaintext key."""
    seed(db, AIBRIDGE_OPENAI_KEY=KEY_A)
    with db.read() as session:
        entries = session.execute(select(AuditEntry)).scalars().all()
    seeded = [e for e in entries if e.action == "provider.seed"]
    assert len(seeded) == 1
    assert all(KEY_A not in (e.before or "") + (e.after or "") for e in entries)


def test_trailing_slash_difference_is_not_drift(db: Database) -> None:
    """A base URL that differs only by a trailing slash is the same provider."""
    seed(db, AIBRIDGE_OPENAI_KEY=KEY_A, AIBRIDGE_OPENAI_BASE_URL="https://api.example.com/v1/")
    _, unchanged, _ = seed(
        db, AIBRIDGE_OPENAI_KEY=KEY_A, AIBRIDGE_OPENAI_BASE_URL="https://api.example.com/v1"
    )
    assert unchanged == ("openai",)
