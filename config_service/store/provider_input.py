"""What an admin may write about a provider: input types and their validation.

Used by the provider store (config_service/store/providers.py) before anything touches
the database. Each violation is an InvalidArgument naming the field (`keys[2]`,
`bedrock.region`, `base_url`, ...); messages never quote a secret or a malformed value.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from config_service.errors import InvalidArgument
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
from config_service.records import BedrockRecord
from config_service.text import UUID_RE, check_text

MAX_DISPLAY_NAME = 200
MAX_BASE_URL = 2048
MAX_SECRET = 4096
MAX_SETTING = 256
MAX_ID_OR_NAME = 100

PATH_RE = re.compile(r"^[a-z_.]{1,40}\Z")

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
    # The provider's etag as the caller read it: the write fails if it changed. Empty: always.
    etag: str = ""


# ---------------------------------------------------------------------------- validation


def quoted(value: str, pattern: re.Pattern[str]) -> str:
    """A caller-supplied value quoted for a message only when it has the expected shape:
    a key pasted into the wrong field is never echoed back."""
    return f"{value!r} " if pattern.match(value) else ""


def check_name(name: str) -> None:
    if not name:
        raise InvalidArgument("name", "is required")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument("name", f"must be at most {MAX_NAME_LENGTH} characters")
    if name_problem(name):
        raise InvalidArgument(
            "name",
            "must match ^[a-z0-9]+(-[a-z0-9]+)*$ (lower-case letters, digits, single dashes)",
        )
    if UUID_RE.match(name):
        raise InvalidArgument("name", "must not look like a UUID (ids and names share id_or_name)")


def check_type(ptype: str) -> None:
    if not ptype:
        raise InvalidArgument("type", f"is required: one of {', '.join(PROVIDER_TYPES)}")
    if ptype not in PROVIDER_TYPES:
        raise InvalidArgument("type", f"must be one of {', '.join(PROVIDER_TYPES)}")


def check_display_name(value: str) -> None:
    check_text("display_name", value, MAX_DISPLAY_NAME)


def check_secret(field_name: str, secret: str) -> None:
    """A pool key: non-empty, no surrounding whitespace, printable. Never quoted back."""
    if not secret:
        raise InvalidArgument(field_name, "is empty")
    if secret != secret.strip():
        raise InvalidArgument(field_name, "must not have leading or trailing whitespace")
    check_text(field_name, secret, MAX_SECRET)


def check_setting(field_name: str, value: str) -> None:
    check_text(field_name, value, MAX_SETTING)
    if value != value.strip():
        raise InvalidArgument(field_name, "must not be padded with whitespace")


def region_from_url(url: str) -> str:
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    match = BEDROCK_HOST_RE.match(host)
    return match.group(1) if match else ""


def bedrock_backed(ptype: str, bedrock: BedrockInput | None) -> bool:
    return ptype == "bedrock" or (ptype in BEDROCK_CAPABLE and bedrock is not None)


def resolve_bedrock(
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
    if not bedrock_backed(ptype, bedrock):
        return None
    b = bedrock or BedrockInput()
    for name in BEDROCK_FIELDS:
        value = getattr(b, name)
        if name in ("access_key", "access_key_secret"):
            if value:
                check_secret(f"bedrock.{name}", value)
        else:
            check_setting(f"bedrock.{name}", value)
    region = b.region or region_from_url(base_url)
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


def resolve_base_url(ptype: str, base_url: str, bedrock: BedrockRecord | None) -> str:
    """The base URL to store: the given one checked, or the type's default."""
    if base_url:
        check_text("base_url", base_url, MAX_BASE_URL)
        problem = base_url_problem(base_url)
        if problem:
            raise InvalidArgument("base_url", problem)
        return base_url
    if bedrock is not None and bedrock.region:
        return bedrock_base_url(bedrock.region)
    default = default_base_url(ptype)
    if not default:
        raise InvalidArgument("base_url", f"is required for type {ptype} (it has no default)")
    return default


def check_key_count(ptype: str, bedrock: BedrockRecord | None, count: int) -> None:
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


def check_unique_secrets(secrets: Sequence[tuple[str, str]], known: dict[str, str]) -> None:
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
    if UUID_RE.match(value):
        return "id", str(uuid.UUID(value))
    if len(value) <= MAX_NAME_LENGTH and name_problem(value) is None:
        return "name", value
    raise InvalidArgument(
        "id_or_name",
        "must be a provider id (UUID) or a name matching ^[a-z0-9]+(-[a-z0-9]+)*$",
    )


# ---------------------------------------------------------------------------- database


def check_paths(paths: Sequence[str]) -> set[str]:
    if not paths:
        raise InvalidArgument("update_mask", "at least one path is required")
    for path in paths:
        if path in IMMUTABLE_PATHS:
            raise InvalidArgument("update_mask", f"{path} is immutable")
        if path not in UPDATE_PATHS:
            raise InvalidArgument(
                "update_mask",
                f"unknown path {quoted(path, PATH_RE)}(allowed: {', '.join(sorted(UPDATE_PATHS))})",
            )
    return set(paths)


def merged_bedrock(
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
