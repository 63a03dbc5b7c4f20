"""Apply a seed plan to the database at boot (DESIGN §6), insert-only.

One transaction, serialized across replicas by a PostgreSQL advisory lock:
- a provider absent from the database is inserted with its keys;
- a live row that matches (type, base URL, Bedrock region and models) is left alone,
  so restarts are no-ops; credentials do not count as drift, so keys can be rotated
  through the API, but env keys that differ from the stored ones are reported
  (`SeedOutcome.keys_kept`: the stored keys stay, the log says how to rotate);
- a live row that differs fails start-up, naming the provider and the fix;
- a soft-deleted row is never resurrected; rows not in the env are never touched.
The revision is bumped once when anything was inserted.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from aibridge.rulebook import BedrockSpec, ProviderSpec
from config_service.db.models import Provider, ProviderKey
from config_service.rbac import SYSTEM
from config_service.seed.env import SeedPlan
from config_service.store.database import Database
from config_service.store.providers import insert_provider
from config_service.store.records import ProviderRecord, audit_view, load_record

# Arbitrary constant shared by every replica ("aibseed").
SEED_LOCK_ID = 0x61696273656564


class SeedConflict(Exception):
    """The environment disagrees with the database; `problems` names each provider."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class SeedOutcome:
    created: tuple[str, ...]
    unchanged: tuple[str, ...]
    skipped_deleted: tuple[str, ...]
    keys_kept: tuple[str, ...] = ()  # sentences: env keys that differ were not applied


def _keys_kept(name: str, source: str) -> str:
    return (
        f"provider {name!r}: the key(s) in {source} differ from the stored ones; the "
        "stored keys are kept (seeding only creates missing providers). To rotate: "
        f"`aibridge providers keys add {name} --from-env VAR`, then `aibridge providers keys "
        f"remove {name} KEY_ID` (ids from `aibridge providers keys list {name}`)"
    )


def _fingerprint(ptype: str, base_url: str, bedrock: BedrockSpec | None) -> dict[str, str]:
    """What drift is judged on: never credentials."""
    return {
        "type": ptype,
        "base_url": base_url.rstrip("/"),
        "bedrock_region": bedrock.region if bedrock else "",
        "bedrock_model": bedrock.model if bedrock else "",
        "bedrock_small_fast_model": bedrock.small_fast_model if bedrock else "",
    }


def _conflict(seed: ProviderSpec, source: str, current: ProviderRecord) -> str | None:
    """Why a live row cannot stand for `seed` (unreadable, or drifted), or None."""
    if current.problems:
        return (
            f"provider {seed.name!r}: its stored settings cannot be read "
            f"({'; '.join(current.problems)}); fix AIBRIDGE_ENCRYPTION_KEYS"
        )
    have = _fingerprint(current.type, current.base_url, current.bedrock)
    want = _fingerprint(seed.type, seed.base_url, seed.bedrock)
    if have == want:
        return None
    diff = ", ".join(
        f"{k} {have[k]!r} in the database vs {want[k]!r} in {source}"
        for k in have
        if have[k] != want[k]
    )
    return (
        f"provider {seed.name!r} already exists in the database and differs from the "
        f"environment ({diff}); update it with `aibridge providers update {seed.name} ...` "
        f"or remove the {source} variables to stop seeding it"
    )


def apply(db: Database, plan: SeedPlan) -> SeedOutcome:
    created: list[str] = []
    unchanged: list[str] = []
    skipped: list[str] = []
    keys_kept: list[str] = []
    if not plan.providers:
        return SeedOutcome((), (), ())
    conflicts: list[str] = []
    with db.write() as session:
        if db.is_postgres:
            session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": SEED_LOCK_ID})
        names = [p.name for p in plan.providers]
        rows = session.execute(select(Provider).where(Provider.name.in_(names))).scalars().all()
        live = {r.name: r for r in rows if not r.deleted}
        deleted = {r.name for r in rows if r.deleted}
        inserted: list[Provider] = []
        for seed in plan.providers:
            source = plan.sources[seed.name]
            row = live.get(seed.name)
            if row is None and seed.name in deleted:
                skipped.append(seed.name)
            elif row is None:
                inserted.append(insert_provider(db, session, seed))
                created.append(seed.name)
            elif conflict := _conflict(seed, source, _settings_of(db, row)):
                conflicts.append(conflict)
            else:
                unchanged.append(seed.name)
                if seed.keys and _stored_keys(session, db, row) != set(seed.keys):
                    keys_kept.append(_keys_kept(seed.name, source))
        if conflicts:
            raise SeedConflict(conflicts)
        if inserted:
            _audit_seeded(db, session, inserted)
    return SeedOutcome(tuple(created), tuple(unchanged), tuple(skipped), tuple(keys_kept))


def _audit_seeded(db: Database, session: Session, inserted: list[Provider]) -> None:
    """One revision for the whole seed, and an audit entry per provider it created."""
    revision = db.bump_revision(session)
    for provider in inserted:
        keys = session.execute(select(ProviderKey).where(ProviderKey.provider_id == provider.id))
        record = load_record(provider, list(keys.scalars().all()), db.cipher, decrypt_keys=False)
        db.audit(
            session,
            SYSTEM,
            "provider.seed",
            "provider",
            provider.id,
            provider.name,
            revision,
            after=audit_view(record),
        )


def _settings_of(db: Database, row: Provider) -> ProviderRecord:
    return load_record(row, [], db.cipher, decrypt_keys=False)


def _stored_keys(session: Session, db: Database, row: Provider) -> set[str | None]:
    keys = session.execute(select(ProviderKey).where(ProviderKey.provider_id == row.id))
    record = load_record(row, list(keys.scalars().all()), db.cipher)
    return {k.secret for k in record.keys}
