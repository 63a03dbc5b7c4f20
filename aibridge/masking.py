"""Masking of secrets for anything a person or a log can read.

`mask_secret` is the one way a secret is shown: a few characters at each end, never
enough to use it. `Secret` wraps a value so that `repr`/`str` (and so every log
line and traceback that formats it) show only the mask.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


def mask_secret(value: str) -> str:
    """Reveal n characters at each end: 4 from 20 characters, 2 from 10, 1 from 5, else none."""
    if not value:
        return ""
    length = len(value)
    if length >= 20:
        n = 4
    elif length >= 10:
        n = 2
    elif length >= 5:
        n = 1
    else:
        n = 0
    if length <= 2 * n or n == 0:
        return "..."
    return f"{value[:n]}...{value[-n:]}"


def sha256_hex(value: str) -> str:
    """Lower-case hex SHA-256 of a token secret: how tokens are stored and compared."""
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Secret:
    """A secret value whose repr and str are masked."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Secret({mask_secret(self.value)!r})"

    def __str__(self) -> str:
        return mask_secret(self.value)

    def __bool__(self) -> bool:
        return bool(self.value)
