"""Providers through the admin API: list, get, create, update (field mask), soft delete.

Every function takes the calling `Subject` and authorizes it (READ_PROVIDERS for
reads, WRITE_PROVIDERS for writes) before touching the database. Reads never
decrypt pool keys: records carry ids and masked hints only.

Each write is one transaction that validates the whole resulting provider, bumps
the revision and appends an audit entry (masked views before/after). Validation
errors name the offending field (`keys[2]`, `bedrock.region`, `base_url`, ...) and
never quote a secret. Rules follow Coder's AI provider CRUD: names match
^[a-z0-9]+(-[a-z0-9]+)*$ (at most 63 characters) and are unique among live rows,
type and name are immutable, base URLs are absolute http(s) URLs (empty means the
type's default), at most 5 keys, none empty, padded or repeated, Bedrock settings
only for anthropic/bedrock, no pool keys for bedrock/copilot. An update's `keys` is
the full desired set: entries by id are kept, new secrets inserted (after the kept
keys, in list order), omitted ids deleted. Delete is a soft delete that frees the name.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from config_service.crypto import DecryptError
from config_service.db.models import Provider, ProviderKey, new_id, utcnow
from config_service.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from config_service.provider_types import (
    BEDROCK_CAPABLE,
    BEDROCK_HOST_RE,
    DEFAULT_BEDROCK_MODEL,
    DEFAULT_BEDROCK_SMALL_FAST_MODEL,
    KEYLESS,
    MAX_KEYS,
    MAX_NAME_LENGTH,
    PROVIDER_TYPES,
    REGION_RE,
    ROLE_ARN_RE,
    base_url_problem,
    bedrock_base_url,
    default_base_url,
    name_problem,
)
from config_service.rbac import Action, Subject, authorize
from config_service.records import (
    BedrockRecord,
    ProviderRecord,
    encode_settings,
    encrypt_key,
    key_aad,
    load_record,
)
from config_service.store.database import Database
from config_service.views import audit_view

MAX_DISPLAY_NAME = 200
MAX_BASE_URL = 2048
MAX_SECRET = 4096
MAX_SETTING = 256
MAX_ID_OR_NAME = 100

_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_PATH_RE = re.compile(r"^[a-z_.]{1,40}$")

BEDROCK_FIELDS = (
    "region",
    "model",
    "small_fast_model",
    "role_arn",
    "access_key",
    "access_key_secret",
)
UPDATE_PATHS = frozenset(
    {"display_name", "base_url", "enabled", "keys", "bedrock"}
    | {f"bedrock.{f}" for f in BEDROCK_FIELDS}
)
IMMUTABLE_PATHS = frozenset({"name", "type", "id"})


@dataclass(frozen=True)
class BedrockInput:
    """Bedrock settings as an admin writes them (empty strings mean unset)."""

    region: str = ""
    model: str = ""
    small_fast_model: str = ""
    role_arn: str = ""
    access_key: str = field(default="", repr=False)
    access_key_secret: str = field(default="", repr=False)

    def is_empty(self) -> bool:
        return not any(getattr(self, f) for f in BEDROCK_FIELDS)


@dataclass(frozen=True)
class NewProvider:
    name: str
    type: str
    display_name: str = ""
    base_url: str = ""
    enabled: bool = True
    keys: tuple[str, ...] = field(default=(), repr=False)
    bedrock: BedrockInput | None = None


@dataclass(frozen=True)
class KeyInput:
    """One entry of an update's desired key set: an existing key's id, or a new secret."""

    id: str = ""
    secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class ProviderChanges:
    """An update: the field-mask paths and the values they select."""

    paths: tuple[str, ...]
    display_name: str = ""
    base_url: str = ""
    enabled: bool = False
    keys: tuple[KeyInput, ...] = ()
    bedrock: BedrockInput | None = None


# ---------------------------------------------------------------------------- validation


def _quoted(value: str, pattern: re.Pattern[str]) -> str:
    """A caller-supplied value quoted for a message only when it has the expected shape:
    a key pasted into the wrong field is never echoed back."""
    return f"{value!r} " if pattern.match(value) else ""


def _check_name(name: str) -> None:
    if not name:
        raise InvalidArgument("name", "is required")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument("name", f"must be at most {MAX_NAME_LENGTH} characters")
    if name_problem(name):
        raise InvalidArgument(
            "name",
            "must match ^[a-z0-9]+(-[a-z0-9]+)*$ (lower-case letters, digits, single dashes)",
        )
    if _UUID_RE.match(name):
        raise InvalidArgument("name", "must not look like a UUID (ids and names share id_or_name)")


def _check_type(ptype: str) -> None:
    if not ptype:
        raise InvalidArgument("type", f"is required: one of {', '.join(PROVIDER_TYPES)}")
    if ptype not in PROVIDER_TYPES:
        raise InvalidArgument("type", f"must be one of {', '.join(PROVIDER_TYPES)}")


def _check_display_name(value: str) -> None:
    if len(value) > MAX_DISPLAY_NAME:
        raise InvalidArgument("display_name", f"must be at most {MAX_DISPLAY_NAME} characters")
    if not value.isprintable():
        raise InvalidArgument("display_name", "must contain printable characters only")


def _check_secret(field_name: str, secret: str) -> None:
    """A pool key: non-empty, no surrounding whitespace, printable. Never quoted back."""
    if not secret:
        raise InvalidArgument(field_name, "is empty")
    if secret != secret.strip():
        raise InvalidArgument(field_name, "must not have leading or trailing whitespace")
    if len(secret) > MAX_SECRET:
        raise InvalidArgument(field_name, f"must be at most {MAX_SECRET} characters")
    if not secret.isprintable():
        raise InvalidArgument(field_name, "must not contain control or non-printable characters")


def _check_setting(field_name: str, value: str) -> None:
    if len(value) > MAX_SETTING:
        raise InvalidArgument(field_name, f"must be at most {MAX_SETTING} characters")
    if value != value.strip() or not value.isprintable():
        raise InvalidArgument(field_name, "must be printable and not padded with whitespace")


def _region_from_url(url: str) -> str:
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    match = BEDROCK_HOST_RE.match(host)
    return match.group(1) if match else ""


def _bedrock_backed(ptype: str, bedrock: BedrockInput | None) -> bool:
    return ptype == "bedrock" or (ptype in BEDROCK_CAPABLE and bedrock is not None)


def _resolve_bedrock(
    ptype: str, bedrock: BedrockInput | None, base_url: str
) -> BedrockRecord | None:
    """Validate the Bedrock settings of a provider of `ptype`; defaults filled in."""
    if bedrock is not None and bedrock.is_empty():
        bedrock = None
    if bedrock is not None and ptype not in BEDROCK_CAPABLE:
        raise InvalidArgument(
            "bedrock",
            f"Bedrock settings are only supported for types anthropic and bedrock, not {ptype}",
        )
    if not _bedrock_backed(ptype, bedrock):
        return None
    b = bedrock or BedrockInput()
    for name in BEDROCK_FIELDS:
        value = getattr(b, name)
        if name in ("access_key", "access_key_secret"):
            if value:
                _check_secret(f"bedrock.{name}", value)
        else:
            _check_setting(f"bedrock.{name}", value)
    region = b.region or _region_from_url(base_url)
    if not region:
        raise InvalidArgument(
            "bedrock.region",
            "is required for a Bedrock provider (requests are signed for a region); a base_url "
            "implies it only with a standard bedrock-runtime.<region>.amazonaws.com host",
        )
    b = replace(b, region=region)
    if b.region and not REGION_RE.match(b.region):
        raise InvalidArgument("bedrock.region", "is not an AWS region (e.g. us-east-1)")
    if b.role_arn and not ROLE_ARN_RE.match(b.role_arn):
        raise InvalidArgument(
            "bedrock.role_arn",
            "must be an IAM role ARN such as arn:aws:iam::123456789012:role/bedrock",
        )
    if b.access_key and not b.access_key_secret:
        raise InvalidArgument("bedrock.access_key_secret", "is required with bedrock.access_key")
    if b.access_key_secret and not b.access_key:
        raise InvalidArgument("bedrock.access_key", "is required with bedrock.access_key_secret")
    return BedrockRecord(
        region=b.region,
        model=b.model or DEFAULT_BEDROCK_MODEL,
        small_fast_model=b.small_fast_model or DEFAULT_BEDROCK_SMALL_FAST_MODEL,
        role_arn=b.role_arn,
        access_key=b.access_key,
        access_key_secret=b.access_key_secret,
    )


def _resolve_base_url(ptype: str, base_url: str, bedrock: BedrockRecord | None) -> str:
    """The base URL to store: the given one checked, or the type's default."""
    if base_url:
        if len(base_url) > MAX_BASE_URL:
            raise InvalidArgument("base_url", f"must be at most {MAX_BASE_URL} characters")
        problem = base_url_problem(base_url)
        if problem is None and not base_url.isprintable():
            problem = "must contain printable characters only"
        if problem:
            raise InvalidArgument("base_url", problem)
        return base_url
    if bedrock is not None and bedrock.region:
        return bedrock_base_url(bedrock.region)
    default = default_base_url(ptype)
    if not default:
        raise InvalidArgument("base_url", f"is required for type {ptype} (it has no default)")
    return default


def _check_key_count(ptype: str, bedrock: BedrockRecord | None, count: int) -> None:
    if count and ptype in KEYLESS:
        how = "AWS credentials" if ptype == "bedrock" else "each user's own token"
        raise InvalidArgument(
            "keys", f"type {ptype} takes no API keys (it authenticates with {how})"
        )
    if count and bedrock is not None:
        raise InvalidArgument(
            "keys",
            "a Bedrock-backed provider takes no API keys (it authenticates with AWS credentials)",
        )
    if count > MAX_KEYS:
        raise InvalidArgument("keys", f"at most {MAX_KEYS} keys per provider, got {count}")


def _check_unique_secrets(secrets: Sequence[tuple[str, str]], known: dict[str, str]) -> None:
    """(field, secret) pairs must differ from each other and from `known` {secret: field}."""
    seen = dict(known)
    for field_name, secret in secrets:
        other = seen.get(secret)
        if other is not None:
            raise InvalidArgument(field_name, f"duplicate key (same as {other})")
        seen[secret] = field_name


def parse_id_or_name(value: str) -> tuple[str, str]:
    """("id", uuid) or ("name", name); InvalidArgument("id_or_name") otherwise."""
    if not value:
        raise InvalidArgument("id_or_name", "is required: a provider id (UUID) or name")
    if _UUID_RE.match(value):
        return "id", str(uuid.UUID(value))
    if len(value) <= MAX_NAME_LENGTH and name_problem(value) is None:
        return "name", value
    raise InvalidArgument(
        "id_or_name",
        "must be a provider id (UUID) or a name matching ^[a-z0-9]+(-[a-z0-9]+)*$",
    )


# ---------------------------------------------------------------------------- database


def _find(session: Session, id_or_name: str, for_update: bool = False) -> Provider:
    kind, value = parse_id_or_name(id_or_name)
    column = Provider.id if kind == "id" else Provider.name
    query = select(Provider).where(column == value, Provider.deleted.is_(False))
    if for_update:
        query = query.with_for_update()
    row = session.execute(query).scalar_one_or_none()
    if row is None:
        raise NotFound(f"provider {id_or_name!r} not found")
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
        rows = (
            session.execute(
                select(Provider).where(Provider.deleted.is_(False)).order_by(Provider.name)
            )
            .scalars()
            .all()
        )
        ids = [row.id for row in rows]
        keys: dict[str, list[ProviderKey]] = {i: [] for i in ids}
        if ids:
            for key in session.execute(
                select(ProviderKey)
                .where(ProviderKey.provider_id.in_(ids))
                .order_by(ProviderKey.created_at, ProviderKey.id)
            ).scalars():
                keys[key.provider_id].append(key)
        return [load_record(row, keys[row.id], db.cipher, decrypt_keys=False) for row in rows]


def get_provider(db: Database, subject: Subject, id_or_name: str) -> ProviderRecord:
    """One live provider by id or name; keys masked."""
    authorize(subject, Action.READ_PROVIDERS)
    parse_id_or_name(id_or_name)
    with db.read() as session:
        return _record(db, session, _find(session, id_or_name))


# ---------------------------------------------------------------------------- writes


def create_provider(db: Database, subject: Subject, spec: NewProvider) -> ProviderRecord:
    """Insert a provider with its keys; AlreadyExists when a live row has the name."""
    authorize(subject, Action.WRITE_PROVIDERS)
    _check_name(spec.name)
    _check_type(spec.type)
    _check_display_name(spec.display_name)
    bedrock = _resolve_bedrock(spec.type, spec.bedrock, spec.base_url)
    base_url = _resolve_base_url(spec.type, spec.base_url, bedrock)
    _check_key_count(spec.type, bedrock, len(spec.keys))
    for i, secret in enumerate(spec.keys):
        _check_secret(f"keys[{i}]", secret)
    _check_unique_secrets([(f"keys[{i}]", s) for i, s in enumerate(spec.keys)], {})
    try:
        with db.write() as session:
            if _name_taken(session, spec.name):
                raise AlreadyExists(f"provider {spec.name!r} already exists")
            now = utcnow()
            row = Provider(
                id=new_id(),
                type=spec.type,
                name=spec.name,
                display_name=spec.display_name,
                enabled=spec.enabled,
                deleted=False,
                base_url=base_url,
                created_at=now,
                updated_at=now,
            )
            row.settings, row.settings_key_id = encode_settings(db.cipher, row.id, bedrock)
            session.add(row)
            session.flush()
            _add_keys(db, session, row.id, spec.keys, None)
            record = _record(db, session, row)
            revision = db.bump_revision(session)
            db.audit(
                session,
                subject,
                "provider.create",
                "provider",
                row.id,
                row.name,
                revision,
                after=audit_view(record),
            )
    except IntegrityError as exc:  # the live-name unique index: a concurrent create won
        raise AlreadyExists(f"provider {spec.name!r} already exists") from exc
    return record


def _check_paths(paths: Sequence[str]) -> set[str]:
    if not paths:
        raise InvalidArgument("update_mask", "at least one path is required")
    for path in paths:
        if path in IMMUTABLE_PATHS:
            raise InvalidArgument("update_mask", f"{path} is immutable")
        if path not in UPDATE_PATHS:
            raise InvalidArgument(
                "update_mask",
                f"unknown path {_quoted(path, _PATH_RE)}"
                f"(allowed: {', '.join(sorted(UPDATE_PATHS))})",
            )
    return set(paths)


def _merged_bedrock(
    current: BedrockRecord | None, changes: ProviderChanges, paths: set[str]
) -> BedrockInput | None:
    """The Bedrock settings after applying the mask's bedrock paths to the current ones."""
    given = changes.bedrock or BedrockInput()
    if "bedrock" in paths:
        return None if given.is_empty() else given
    base = (
        BedrockInput(**{f: getattr(current, f) for f in BEDROCK_FIELDS})
        if current is not None
        else BedrockInput()
    )
    updates = {f: getattr(given, f) for f in BEDROCK_FIELDS if f"bedrock.{f}" in paths}
    merged = replace(base, **updates)
    return None if merged.is_empty() else merged


def update_provider(
    db: Database, subject: Subject, id_or_name: str, changes: ProviderChanges
) -> ProviderRecord:
    """Apply the masked fields to a live provider (name and type never change)."""
    authorize(subject, Action.WRITE_PROVIDERS)
    paths = _check_paths(changes.paths)
    parse_id_or_name(id_or_name)
    if "display_name" in paths:
        _check_display_name(changes.display_name)
    if "keys" in paths:
        if len(changes.keys) > MAX_KEYS:
            raise InvalidArgument(
                "keys", f"at most {MAX_KEYS} keys per provider, got {len(changes.keys)}"
            )
        for i, key in enumerate(changes.keys):
            if bool(key.id) == bool(key.secret):
                raise InvalidArgument(f"keys[{i}]", "set exactly one of id (keep) or secret (add)")
            if key.secret:
                _check_secret(f"keys[{i}].secret", key.secret)
    bedrock_paths = {p for p in paths if p == "bedrock" or p.startswith("bedrock.")}
    try:
        with db.write() as session:
            row = _find(session, id_or_name, for_update=True)
            keys = _keys_of(session, row.id)
            before = load_record(row, keys, db.cipher, decrypt_keys=False)
            display_name = changes.display_name if "display_name" in paths else row.display_name
            enabled = changes.enabled if "enabled" in paths else row.enabled
            settings_touched = bool(bedrock_paths) or "base_url" in paths
            bedrock = before.bedrock
            base_url = row.base_url
            if settings_touched:
                if before.problems and "bedrock" not in paths and row.type in BEDROCK_CAPABLE:
                    raise FailedPrecondition(
                        f"the stored Bedrock settings of {row.name!r} cannot be read (check "
                        "AIBRIDGE_ENCRYPTION_KEYS); replace them whole with the 'bedrock' path"
                    )
                bedrock_in = _merged_bedrock(before.bedrock, changes, paths)
                if "base_url" in paths:
                    base_in = changes.base_url
                elif (
                    before.bedrock is not None
                    and before.bedrock.region
                    and row.base_url == bedrock_base_url(before.bedrock.region)
                ):
                    base_in = ""  # derived from the region: it follows a region change
                else:
                    base_in = row.base_url
                bedrock = _resolve_bedrock(row.type, bedrock_in, base_in)
                base_url = _resolve_base_url(row.type, base_in, bedrock)
            by_id = {k.id: k for k in keys}
            kept: list[ProviderKey] = list(keys)
            new_secrets: list[tuple[str, str]] = []
            if "keys" in paths:
                kept = []
                for i, key in enumerate(changes.keys):
                    if key.secret:
                        new_secrets.append((f"keys[{i}].secret", key.secret))
                        continue
                    existing = by_id.get(key.id)
                    if existing is None:
                        raise InvalidArgument(
                            f"keys[{i}].id",
                            f"{_quoted(key.id, _UUID_RE)}is not a key of provider {row.name!r}",
                        )
                    if existing in kept:
                        raise InvalidArgument(f"keys[{i}].id", "listed twice")
                    kept.append(existing)
            _check_key_count(row.type, bedrock, len(kept) + len(new_secrets))
            if new_secrets:
                known: dict[str, str] = {}
                for old in kept:
                    try:
                        plain = db.cipher.decrypt(old.secret, old.secret_key_id, key_aad(old.id))
                    except DecryptError:
                        continue  # unreadable: cannot compare, and the pool reports it anyway
                    known[plain] = f"kept key {old.id}"
                _check_unique_secrets(new_secrets, known)
            removed = [k for k in keys if k not in kept]
            for old in removed:
                session.delete(old)
            session.flush()
            last = max((k.created_at for k in kept), default=None)
            added = _add_keys(db, session, row.id, [s for _, s in new_secrets], last)
            row.display_name = display_name
            row.enabled = enabled
            row.base_url = base_url
            if settings_touched:
                row.settings, row.settings_key_id = encode_settings(db.cipher, row.id, bedrock)
            row.updated_at = utcnow()
            session.flush()
            record = _record(db, session, row)
            after = audit_view(record)
            if "keys" in paths:
                after["additional"] = {
                    "added": _key_hints(added),
                    "removed": _key_hints(removed),
                    "kept": len(kept),
                }
            revision = db.bump_revision(session)
            db.audit(
                session,
                subject,
                "provider.update",
                "provider",
                row.id,
                row.name,
                revision,
                before=audit_view(before),
                after=after,
            )
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
        revision = db.bump_revision(session)
        db.audit(
            session,
            subject,
            "provider.delete",
            "provider",
            row.id,
            row.name,
            revision,
            before=audit_view(before),
            after=after,
        )
    return record
