"""What the record shipper takes: anything that says its id and gives its values as one
tuple (`Values`), which `batch.Batch` turns into columns; `Made` is one whose values are
made already. Defined here, beside the shipper, so that the shipper knows nothing of the
bridge (which submits its finished captures' values as `Made`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

# What describes a request, the same for many of them (one tuple object per distinct
# set: the batch encodes each once): provider name, provider type (ProviderType),
# route, requested model, served model, principal id, principal name, token id,
# client, user agent, session id, credential kind (CredentialKind), credential hint,
# proxied. Every text fit to keep (within its limit, printable, secrets masked).
Description = tuple[str, int, str, str, str, str, str, str, str, str, str, int, str, bool]
# Input, output, cache read, cache write and reasoning tokens (TokenUsage's order); a
# list where the response reader kept them as one.
Tokens = Sequence[int]
NO_TOKENS: Tokens = (0, 0, 0, 0, 0)
# (name, call id, arguments) of one tool call, fit to keep.
ToolCall = tuple[str, str, str]
# description, id, started, first byte and ended (nanoseconds since the epoch, first
# byte 0 when none), outcome (Outcome), status code, attempts, streamed, tokens, tool
# calls, prompt ("" when none).
Values = tuple[
    Description, str, int, int, int, int, int, int, bool, Tokens, tuple[ToolCall, ...], str
]


class Record(Protocol):
    """A finished interception record (made into values only when a batch is made)."""

    @property
    def id(self) -> str: ...

    def values(self) -> Values:
        """The record's values; what it raises makes the record unbuildable (dropped)."""
        ...


class Made:
    """A record whose values are made already: what a queue holds of a finished
    interception is its values alone (a tuple of texts and numbers, the description shared
    by many), not the object they were made of and everything that references."""

    __slots__ = ("row",)

    def __init__(self, row: Values) -> None:
        self.row = row

    @property
    def id(self) -> str:
        return self.row[1]

    def values(self) -> Values:
        return self.row
