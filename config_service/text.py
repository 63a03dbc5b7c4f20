"""The one rule for a string field that comes from outside: bounded, and free of the
characters that make no sense in it.

A single-line field (a name, an id, a version) must be printable in the sense of
`str.isprintable`: no control character (NUL, newline, ESC...), no format character
(bidirectional overrides...), no separator other than the space. Free text (an error
message) may also hold newlines and tabs. NUL never passes: PostgreSQL cannot store it.
Messages name the field and never quote the value, which may be a secret pasted into the
wrong place.
"""

from __future__ import annotations

import re
import uuid

from config_service.errors import InvalidArgument

# \Z, not $: in Python `$` also matches before a trailing newline.
UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)
_LINE_BREAKS = str.maketrans("", "", "\n\t")


def check_text(field: str, value: str, max_length: int, *, multiline: bool = False) -> str:
    """`value` when it has at most `max_length` characters of the allowed kinds."""
    if len(value) > max_length:
        raise InvalidArgument(field, f"must be at most {max_length} characters")
    if multiline:
        if not value.translate(_LINE_BREAKS).isprintable():
            raise InvalidArgument(
                field, "must be printable text (no control characters but newline and tab)"
            )
    elif not value.isprintable():
        raise InvalidArgument(field, "must be printable (no control characters or line breaks)")
    return value


def check_uuid(field: str, value: str, what: str) -> str:
    """`value` as a canonical (lower-case) UUID; `what` names the kind of id for the message."""
    if not value:
        raise InvalidArgument(field, f"is required: {what}")
    if not UUID_RE.match(value):
        raise InvalidArgument(field, f"must be {what}")
    return str(uuid.UUID(value))
