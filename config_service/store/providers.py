"""Providers through the admin API: list, get, create, update (field mask), soft delete,
add or delete one key.

Every function takes the calling `Subject` and authorizes it (READ_PROVIDERS for
reads, WRITE_PROVIDERS for writes) before touching the database. Reads never
decrypt pool keys: records carry ids and masked hints only.

Each write is one transaction that validates the whole resulting provider, bumps
the revision and appends an audit entry (masked views before/after). Validation
errors name the offending field (`keys[2]`, `bedrock.region`, `base_url`, ...) and
never quote a secret. What a provider may hold is the rulebook's (`aibridge.rulebook`,
shared with the env seed, which inserts through `insert_provider`); this module adds
what needs the database: names unique among live rows, type and name immutable, an
update refused only for what it changes (a stored problem shows as status ERROR, not
as a refusal of an unrelated update). An update's `keys` is
the full desired set: entries by id are kept, new secrets inserted (after the kept
keys, in list order), omitted ids deleted; adding or deleting one key changes only that
key, so concurrent key changes never undo each other. Updates and key changes given an
etag (ProviderRecord.etag, changed by every write) fail with FailedPrecondition when the
provider changed since; without one they are unconditional. Delete is a soft delete that
frees the name.
Update inputs and the rulebook's verdicts as InvalidArgument live in `provider_input.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aibridge.rulebook import (
    MAX_KEYS,
    TYPES,
    UUID_RE,
    Bedrock,
    BedrockSpec,
    ProviderSpec,
    base_url_problems,
    bedrock_base_url,
    bedrock_problems,
    complete,
    display_name_problems,
    duplicate_problems,
    key_count_problems,
    secret_problems,
    too_many_keys,
    validate,
)
from config_service.crypto import DecryptError
from config_service.db.models import Provider, ProviderKey, new_id, utcnow
from config_service.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from config_service.rbac import Action, Subject, authorize
from config_service.store.database import Database
from config_service.store.provider_input import (
    KeyInput,
    ProviderChanges,
    check_paths,
    merged_bedrock,
    parse_id_or_name,
    quoted,
    refuse,
)
from config_service.store.records import (
    ProviderRecord,
    audit_view,
    encode_settings,
    encrypt_key,
    key_aad,
    live_providers,
    load_record,
)
from config_service.text import check_uuid


def _find(session: Session, id_or_name: str, for_update: bool = False) -> Provider:
    kind, value = parse_id_or_name(id_or_name)
    column = Provider.id if kind == "id" else Provider.name
    query = select(Provider).where(column == value, Provider.deleted.is_(False))
    if for_update:
        query = query.with_for_update()
    row = session.execute(query).scalar_one_or_none()
    if row is None:  # the caller's value is not echoed: it may be a secret pasted here
        raise NotFound(f"provider not found: no live provider has that {kind}")
    return row


def _name_taken(session: Session, name: str) -> bool:
    taken = session.execute(
        select(Provider.id).where(Provider.name == name, Provider.deleted.is_(False))
    ).first()
    return taken is not None


def _keys_of(session: Session, provider_id: str) -> list[ProviderKey]:
    return list(
        session.execute(
            select(ProviderKey)
            .where(ProviderKey.provider_id == provider_id)
            .order_by(ProviderKey.created_at, ProviderKey.id)
        ).scalars()
    )


def _record(db: Database, session: Session, row: Provider) -> ProviderRecord:
    return load_record(row, _keys_of(session, row.id), db.cipher, decrypt_keys=False)


def _add_keys(
    db: Database, session: Session, provider_id: str, secrets: Sequence[str], after: datetime | None
) -> list[ProviderKey]:
    """Insert pool keys; created_at strictly increasing in list order, after `after`."""
    start = utcnow()
    if after is not None and start <= after:
        start = after + timedelta(microseconds=1)
    added: list[ProviderKey] = []
    for index, secret in enumerate(secrets):
        key_id = new_id()
        stored, kid, hint = encrypt_key(db.cipher, key_id, secret)
        key = ProviderKey(
            id=key_id,
            provider_id=provider_id,
            secret=stored,
            secret_key_id=kid,
            hint=hint,
            created_at=start + timedelta(microseconds=index),
        )
        session.add(key)
        added.append(key)
    session.flush()
    return added


def _key_hints(keys: Sequence[ProviderKey]) -> list[dict[str, str]]:
    return [{"id": k.id, "hint": k.hint} for k in keys]


# ---------------------------------------------------------------------------- reads


def list_providers(db: Database, subject: Subject) -> list[ProviderRecord]:
    """Every live provider (disabled ones included), sorted by name; keys masked."""
    authorize(subject, Action.READ_PROVIDERS)
    with db.read() as session:
        rows, keys = live_providers(session)
        return [load_record(row, keys[row.id], db.cipher, decrypt_keys=False) for row in rows]


def get_provider(db: Database, subject: Subject, id_or_name: str) -> ProviderRecord:
    """One live provider by id or name; keys masked."""
    authorize(subject, Action.READ_PROVIDERS)
    parse_id_or_name(id_or_name)
    with db.read() as session:
        return _record(db, session, _find(session, id_or_name))


# ---------------------------------------------------------------------------- writes


def create_provider(db: Database, subject: Subject, spec: ProviderSpec) -> ProviderRecord:
    """Insert a provider with its keys; AlreadyExists when a live row has the name."""
    authorize(subject, Action.WRITE_PROVIDERS)
    refuse(validate(spec))
    try:
        with db.write() as session:
            if _name_taken(session, spec.name):
                raise AlreadyExists(f"provider {spec.name!r} already exists")
            record = _record(db, session, insert_provider(db, session, spec))
            _audited(db, session, subject, "provider.create", record, None, audit_view(record))
    except IntegrityError as exc:  # the live-name unique index: a concurrent create won
        raise AlreadyExists(f"provider {spec.name!r} already exists") from exc
    return record


def insert_provider(db: Database, session: Session, spec: ProviderSpec) -> Provider:
    """Insert a valid spec (defaults filled in) and its keys, in the caller's transaction.

    The one insert path: the admin API's create and the env seed both come here after
    the rulebook found no problem.
    """
    spec = complete(spec)
    now = utcnow()
    row = Provider(
        id=new_id(),
        type=spec.type,
        name=spec.name,
        display_name=spec.display_name,
        enabled=spec.enabled,
        deleted=False,
        base_url=spec.base_url,
        created_at=now,
        updated_at=now,
    )
    row.settings, row.settings_key_id = encode_settings(db.cipher, row.id, spec.bedrock)
    session.add(row)
    session.flush()
    _add_keys(db, session, row.id, spec.keys, None)
    return row


# The keys a write leaves in the pool: (kept keys, (field, secret) of each new key), given the
# provider row and its current keys in pool order. Runs inside the write's transaction.
KeyChange = tuple[list[ProviderKey], list[tuple[str, str]]]
KeyPlan = Callable[[Provider, list[ProviderKey]], KeyChange]


def update_provider(
    db: Database, subject: Subject, id_or_name: str, changes: ProviderChanges
) -> ProviderRecord:
    """Apply the masked fields to a live provider (name and type never change)."""
    authorize(subject, Action.WRITE_PROVIDERS)
    paths = check_paths(changes.paths)
    parse_id_or_name(id_or_name)
    if "display_name" in paths:
        refuse(display_name_problems(changes.display_name))
    plan: KeyPlan | None = None
    if "keys" in paths:
        refuse(too_many_keys(len(changes.keys)))
        for i, key in enumerate(changes.keys):
            if bool(key.id) == bool(key.secret):
                raise InvalidArgument(f"keys[{i}]", "set exactly one of id (keep) or secret (add)")
            if key.secret:
                refuse(secret_problems(f"keys[{i}].secret", key.secret))
        plan = partial(_desired_keys, changes.keys)
    return _update(db, subject, id_or_name, changes, paths, plan, "provider.update")


def add_provider_key(
    db: Database, subject: Subject, id_or_name: str, secret: str, etag: str = ""
) -> ProviderRecord:
    """Append one key to the pool in one transaction (concurrent key changes all survive)."""
    authorize(subject, Action.WRITE_PROVIDERS)
    parse_id_or_name(id_or_name)
    refuse(secret_problems("secret", secret))

    def plan(row: Provider, keys: list[ProviderKey]) -> KeyChange:
        if len(keys) >= MAX_KEYS:
            raise FailedPrecondition(
                f"provider {row.name!r} already has {MAX_KEYS} keys (the most allowed); "
                "remove one first"
            )
        return keys, [("secret", secret)]

    changes = ProviderChanges(paths=("keys",), etag=etag)
    return _update(db, subject, id_or_name, changes, {"keys"}, plan, "provider.key.add")


def delete_provider_key(
    db: Database, subject: Subject, id_or_name: str, key_id: str, etag: str = ""
) -> ProviderRecord:
    """Remove one key from the pool by id in one transaction."""
    authorize(subject, Action.WRITE_PROVIDERS)
    parse_id_or_name(id_or_name)
    key_id = check_uuid("key_id", key_id, "a key id (a UUID, as `keys list` shows it)")

    def plan(row: Provider, keys: list[ProviderKey]) -> KeyChange:
        kept = [k for k in keys if k.id != key_id]
        if len(kept) == len(keys):
            raise NotFound(f"provider {row.name!r} has no key with that id")
        return kept, []

    changes = ProviderChanges(paths=("keys",), etag=etag)
    return _update(db, subject, id_or_name, changes, {"keys"}, plan, "provider.key.delete")


def _desired_keys(wanted: Sequence[KeyInput], row: Provider, keys: list[ProviderKey]) -> KeyChange:
    """An update's full desired key set: entries by id kept, secrets added, the rest removed."""
    by_id = {k.id: k for k in keys}
    kept: list[ProviderKey] = []
    new_secrets: list[tuple[str, str]] = []
    for i, key in enumerate(wanted):
        if key.secret:
            new_secrets.append((f"keys[{i}].secret", key.secret))
            continue
        existing = by_id.get(key.id)
        if existing is None:
            raise InvalidArgument(
                f"keys[{i}].id",
                f"{quoted(key.id, UUID_RE)}is not a key of provider {row.name!r}",
            )
        if existing in kept:
            raise InvalidArgument(f"keys[{i}].id", "listed twice")
        kept.append(existing)
    return kept, new_secrets


def _check_keys(db: Database, row: Provider, change: KeyChange, bedrock_backed: bool) -> None:
    """The pool a write leaves obeys the rulebook: key count, no duplicate secrets."""
    kept, new_secrets = change
    count = len(kept) + len(new_secrets)
    refuse(key_count_problems(TYPES[row.type], bedrock_backed, count))
    if new_secrets:
        refuse(duplicate_problems(new_secrets, _readable_secrets(db, kept)))


def _replace_keys(
    db: Database, session: Session, row: Provider, keys: list[ProviderKey], change: KeyChange
) -> tuple[list[ProviderKey], list[ProviderKey]]:
    """Delete the keys `change` drops, add its new ones after the kept; (added, removed)."""
    kept, new_secrets = change
    removed = [k for k in keys if k not in kept]
    for old in removed:
        session.delete(old)
    session.flush()
    last = max((k.created_at for k in kept), default=None)
    return _add_keys(db, session, row.id, [s for _, s in new_secrets], last), removed


def _readable_secrets(db: Database, keys: Sequence[ProviderKey]) -> dict[str, str]:
    """{plaintext: "kept key <id>"} of the keys that decrypt (the rest cannot be compared,
    and the pool reports them anyway)."""
    known: dict[str, str] = {}
    for old in keys:
        try:
            plain = db.cipher.decrypt(old.secret, old.secret_key_id, key_aad(old.id))
        except DecryptError:
            continue
        known[plain] = f"kept key {old.id}"
    return known


def _settings_after(
    row: Provider, before: ProviderRecord, changes: ProviderChanges, paths: set[str]
) -> tuple[str, BedrockSpec | None]:
    """The base URL and Bedrock settings an update leaves, checked by the rulebook."""
    ptype = TYPES[row.type]
    if before.problems and "bedrock" not in paths and ptype.bedrock is not Bedrock.NEVER:
        raise FailedPrecondition(
            f"the stored Bedrock settings of {row.name!r} cannot be read (check "
            "AIBRIDGE_ENCRYPTION_KEYS); replace them whole with the 'bedrock' path"
        )
    bedrock_in = merged_bedrock(before.bedrock, changes, paths)
    if "base_url" in paths:
        base_in = changes.base_url
    elif row.base_url == ptype.default_base_url or (
        before.bedrock is not None
        and before.bedrock.region
        and row.base_url == bedrock_base_url(before.bedrock.region)
    ):
        # A derived default (the type's, or the region's Bedrock endpoint) follows the
        # change: an anthropic provider gaining Bedrock settings moves to the Bedrock
        # endpoint, and back when it loses them.
        base_in = ""
    else:
        base_in = row.base_url
    refuse(bedrock_problems(ptype, bedrock_in, base_in))
    refuse(base_url_problems(ptype, base_in, bedrock_in))
    done = complete(ProviderSpec(row.name, row.type, base_url=base_in, bedrock=bedrock_in))
    return done.base_url, done.bedrock


def _update(
    db: Database,
    subject: Subject,
    id_or_name: str,
    changes: ProviderChanges,
    paths: set[str],
    plan: KeyPlan | None,
    action: str,
) -> ProviderRecord:
    """One write to a live provider: its masked fields, and its keys as `plan` says."""
    settings_touched = "base_url" in paths or any(p.partition(".")[0] == "bedrock" for p in paths)
    try:
        with db.write() as session:
            row = _find(session, id_or_name, for_update=True)
            keys = _keys_of(session, row.id)
            before = load_record(row, keys, db.cipher, decrypt_keys=False)
            if changes.etag and changes.etag != before.etag:
                raise FailedPrecondition(
                    f"etag: provider {row.name!r} changed since it was read; "
                    "re-read it (GetProvider) and retry with its current etag"
                )
            base_url, bedrock = (
                _settings_after(row, before, changes, paths)
                if settings_touched
                else (row.base_url, before.bedrock)
            )
            change = plan(row, keys) if plan is not None else (list(keys), [])
            _check_keys(db, row, change, bedrock is not None)
            kept = change[0]
            added, removed = _replace_keys(db, session, row, keys, change)
            row.display_name = changes.display_name if "display_name" in paths else row.display_name
            row.enabled = changes.enabled if "enabled" in paths else row.enabled
            row.base_url = base_url
            if settings_touched:
                row.settings, row.settings_key_id = encode_settings(db.cipher, row.id, bedrock)
            row.updated_at = utcnow()
            session.flush()
            record = _record(db, session, row)
            after = audit_view(record)
            if plan is not None:
                after["additional"] = {
                    "added": _key_hints(added),
                    "removed": _key_hints(removed),
                    "kept": len(kept),
                }
            _audited(db, session, subject, action, record, audit_view(before), after)
    except IntegrityError as exc:  # a constraint raced us (the 5-key trigger)
        raise FailedPrecondition("the provider changed concurrently; retry") from exc
    return record


def delete_provider(db: Database, subject: Subject, id_or_name: str) -> ProviderRecord:
    """Soft delete: the row stays (disabled, deleted) for the audit trail; the name is free."""
    authorize(subject, Action.WRITE_PROVIDERS)
    parse_id_or_name(id_or_name)
    with db.write() as session:
        row = _find(session, id_or_name, for_update=True)
        before = _record(db, session, row)
        row.deleted = True
        row.enabled = False
        row.updated_at = utcnow()
        session.flush()
        record = _record(db, session, row)
        after = audit_view(record)
        after["deleted"] = True
        _audited(db, session, subject, "provider.delete", record, audit_view(before), after)
    return record


def _audited(
    db: Database,
    session: Session,
    subject: Subject,
    action: str,
    record: ProviderRecord,
    before: dict[str, Any] | None,
    after: dict[str, Any],
) -> None:
    """A provider write's new revision and its audit entry (masked views), in its transaction."""
    revision = db.bump_revision(session)
    db.audit(session, subject, action, "provider", record.id, record.name, revision, before, after)
