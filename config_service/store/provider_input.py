"""What an admin may write about a provider: update inputs, and the rulebook's verdicts
as errors.

The rules themselves are in `aibridge.rulebook` (shared with the env seed): this module
turns the first problem the rulebook finds into an InvalidArgument naming the field
(`keys[2]`, `bedrock.region`, `base_url`, ...); messages never quote a secret or a
malformed value. Used by the provider store before anything touches the database.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from aibridge.rulebook import (
    BEDROCK_FIELDS,
    MAX_NAME_LENGTH,
    NAME_PATTERN,
    NAME_RE,
    UUID_RE,
    BedrockSpec,
    Problem,
)
from config_service.errors import InvalidArgument

PATH_RE = re.compile(r"^[a-z_.]{1,40}\Z")

UPDATE_PATHS = frozenset(
    {"display_name", "base_url", "enabled", "keys", "bedrock"}
    | {f"bedrock.{f}" for f in BEDROCK_FIELDS}
)
IMMUTABLE_PATHS = frozenset({"name", "type", "id"})


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
    bedrock: BedrockSpec | None = None
    # The provider's etag as the caller read it: the write fails if it changed. Empty: always.
    etag: str = ""


def refuse(problems: Iterable[Problem]) -> None:
    """Raise the first of the rulebook's problems (one field per INVALID_ARGUMENT)."""
    for field_name, message in problems:
        raise InvalidArgument(field_name, message)


def quoted(value: str, pattern: re.Pattern[str]) -> str:
    """A caller-supplied value quoted for a message only when it has the expected shape:
    a key pasted into the wrong field is never echoed back."""
    return f"{value!r} " if pattern.match(value) else ""


def parse_id_or_name(value: str) -> tuple[str, str]:
    """("id", uuid) or ("name", name); InvalidArgument("id_or_name") otherwise."""
    if not value:
        raise InvalidArgument("id_or_name", "is required: a provider id (UUID) or name")
    if UUID_RE.match(value):
        return "id", str(uuid.UUID(value))
    if len(value) <= MAX_NAME_LENGTH and NAME_RE.match(value):
        return "name", value
    raise InvalidArgument(
        "id_or_name", f"must be a provider id (UUID) or a name matching {NAME_PATTERN}"
    )


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
    current: BedrockSpec | None, changes: ProviderChanges, paths: set[str]
) -> BedrockSpec | None:
    """The Bedrock settings after applying the mask's bedrock paths to the current ones."""
    given = changes.bedrock or BedrockSpec()
    if "bedrock" in paths:
        return None if given.is_empty() else given
    base = current or BedrockSpec()
    updates = {f: getattr(given, f) for f in BEDROCK_FIELDS if f"bedrock.{f}" in paths}
    merged = replace(base, **updates)
    return None if merged.is_empty() else merged
