"""Snapshot versions: the database revision as a decimal string, compared as numbers.

"10" is newer than "9"; anything that is not a plain decimal revision is malformed and
is refused by both ends, never compared as text nor applied.
"""

from __future__ import annotations

_MAX_DIGITS = 19  # a signed 64-bit revision


def parse_version(value: str) -> int | None:
    """The revision `value` names, or None when it is not a decimal revision."""
    if not value or len(value) > _MAX_DIGITS or not (value.isascii() and value.isdigit()):
        return None
    return int(value)
