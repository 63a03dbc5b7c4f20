"""A batch of interception records as they go on the wire: `InterceptionColumns`.

    batch = Batch()
    batch.extend(rows, limit)             # how many of `rows` (record values) were added
    batch.add(values, limit)              # one: 0 when added; else the bytes it would add
    payload = batch.encode(fixed)         # a serialized RecordInterceptionsRequest

A record gives its values as one tuple (`Record.values`: the describing part, the same
tuple object for every request described alike, then what happened); adding records to a
batch appends those tuples (`extend`: C passes over them, the size bound included, unless
their prompts or tool calls are large). `encode` turns the rows into columns, each written
once (in C): each distinct description once (description columns, its texts as indexes
into a per-batch string table) and an index per record, tool calls and prompts side
columns; a column whose values are all equal or all within 0..127 (outcome, status,
attempts, flags, most counts, the description index) as packed bytes. The rest: with
`fixed` (`fixed_columns`, for a config service that said it reads them) the ids as one text
and the times and other counts fixed-width, one copy each; else (`columns`) `extend`ed into
upb value by value. So the per-record work on the bridge is a tuple, whatever the number
of fields. `Batch.size` is an upper bound of the encoded size, kept as records are added,
so a batch is cut before it passes the shipper's byte cap.

`split` halves a payload of any form (columns, fixed columns, or the records one by one that
older spools hold), to isolate the records a service refuses; `unfix` turns a payload of
fixed columns into the same records as columns (for a service from before them).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from itertools import compress
from operator import itemgetter

from aibridge.config.v1 import usage_pb2
from aibridge.config.v1 import usage_service_pb2 as pb
from aibridge.recording import (
    DESCRIPTION_COLUMNS,
    FIXED_COLUMNS,
    HAPPENED_COLUMNS,
    RECORD_COLUMNS,
    TOKEN_KINDS,
    ids_from_text,
    ids_to_text,
)
from data_plane.recording.record import NO_TOKENS, Description, ToolCall, Values

# Per record, beyond its texts: id (2 + 36), three times (3 x 10), nine indexes (up to 5
# each), enums, ints and bools (up to 10 each), five token counts (up to 10 each),
# each column's tag and length amortized over the batch.
_FIXED = 2 + 36 + 30 + 45 + 40 + 50
assert HAPPENED_COLUMNS[:4] == ("id", "started_at", "first_byte_at", "ended_at")  # `columns`
# The description columns, in the order of `Description`'s values.
_SCALARS = frozenset(("provider_type", "credential_kind", "proxied"))


class Batch:
    """Records on their way to one RecordInterceptions call (see the module docstring)."""

    __slots__ = ("_described", "rows", "size")

    def __init__(self) -> None:
        self.rows: list[Values] = []
        self.size = 8
        # The descriptions the batch holds, by identity (the rows keep them alive): a
        # description is one object per distinct set, so no tuple of 14 is hashed.
        self._described: set[int] = set()

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, values: Values, limit: int = sys.maxsize) -> int:
        """Add a record's values unless the batch would pass `limit` bytes with them: 0
        when added, else what they would add (an upper bound of their bytes)."""
        cost = _FIXED
        description = values[0]
        new = id(description) not in self._described
        if new:
            cost += _described_cost(description)
        calls = values[10]
        if calls:
            cost += _calls_cost(calls)
        prompt = values[11]
        if prompt:
            cost += len(prompt.encode()) + 12
        if self.size + cost > limit:
            return cost
        self.rows.append(values)
        if new:
            self._described.add(id(description))
        self.size += cost
        return 0

    def extend(self, rows: list[Values], limit: int = sys.maxsize) -> int:
        """Add records' values from the first on while the batch stays within `limit`
        bytes: how many were added. All of them at once (C passes over the rows: no
        Python per record) when they fit, as they do unless prompts or tool calls are
        large; else one by one (`add`) up to the first that does not fit."""
        n = len(rows)
        if not n:
            return 0
        descriptions = list(map(_DESCRIPTION, rows))
        described = self._described
        first = descriptions[0]
        if descriptions.count(first) == n:  # one description (a C pass, by identity first)
            new = [] if id(first) in described else [first]
        else:
            distinct = dict(zip(map(id, descriptions), descriptions, strict=True))
            new = [d for i, d in distinct.items() if i not in described]
        cost = _FIXED * n + sum(map(_described_cost, new))
        if any(map(_CALLS, rows)):
            cost += sum(map(_calls_cost, filter(None, map(_CALLS, rows))))
        if any(map(_PROMPT, rows)):
            cost += sum(len(p.encode()) + 12 for p in map(_PROMPT, rows) if p)
        if self.size + cost <= limit:
            self.rows.extend(rows)
            described.update(map(id, new))
            self.size += cost
            return n
        for i, values in enumerate(rows):
            if self.add(values, limit):
                return i
        return n

    def encode(self, fixed: bool = False) -> bytes:
        """The batch as a serialized RecordInterceptionsRequest: `columns`, or with
        `fixed` (for a service that reads them) `fixed_columns`."""
        if fixed and self.rows:
            try:
                out = pb.InterceptionColumns()
                raw = _fill(self.rows, out, fixed=True)  # the serialized fields, in pieces
            except (ValueError, OverflowError, TypeError):
                pass  # a value beyond a fixed width (or of a wrong type): as `columns`
            else:
                head = out.SerializeToString()
                size = len(head) + sum(map(len, raw))
                return b"".join((_FIXED_REQUEST, _varint(size), head, *raw))  # one copy
        request = pb.RecordInterceptionsRequest()
        columns(self.rows, request.columns)  # filled in place: no copy of the columns
        return request.SerializeToString()


def columns(
    rows: list[Values], out: pb.InterceptionColumns | None = None
) -> pb.InterceptionColumns:
    """`rows` as columns (into `out`, else a new message): one `extend` per column, the
    texts through the string table."""
    if out is None:
        out = pb.InterceptionColumns()
    if rows:
        _fill(rows, out, fixed=False)
    return out


def _fill(rows: list[Values], out: pb.InterceptionColumns, fixed: bool) -> list[bytes]:
    """`rows` as columns into `out`; with `fixed`, the per-record columns returned
    instead, serialized (in pieces), to be appended to `out`'s serialized bytes: the ids
    as one text, the times and the counts that are neither all equal nor all small fixed-width
    (`array(...).tobytes()`: one copy per column, where upb's `extend` costs ~400
    instructions per value), the packed varint columns as made (not parsed by upb to be
    written again)."""
    raw: list[bytes] = []
    (descriptions, *happened, tokens, tool_calls, prompts) = zip(*rows, strict=True)
    # Each distinct description once (by identity: equal ones made apart, as after the
    # bridge's cache was cleared, are merely written twice), its position per record.
    n = len(rows)
    first = descriptions[0]
    if descriptions.count(first) == n:  # one description (a C pass, by identity first)
        distinct: dict[int, Description] = {id(first): first}
        index = _TAGS["description"] + _varint(n) + bytes(n)
    else:
        identities = list(map(id, descriptions))
        distinct = dict(zip(identities, descriptions, strict=True))
        position = dict(zip(distinct, range(len(distinct)), strict=True))
        indexes = list(map(position.__getitem__, identities))
        index = _packed(out, "description", indexes)
    if fixed:
        raw.append(index)
    else:
        out.MergeFromString(index)
    strings: dict[object, int] = {}
    described = zip(*distinct.values(), strict=True)
    for name, values in zip(DESCRIPTION_COLUMNS, described, strict=True):
        if name in _SCALARS:
            getattr(out, name).extend(values)
        else:
            getattr(out, name).extend([strings.setdefault(v, len(strings)) for v in values])
    out.strings.extend(strings)  # type: ignore[arg-type]  # the texts of `Description`
    ids, started, first_byte, ended, *numbers = happened
    id_text = ids_to_text(ids) if fixed else None
    if id_text is not None:
        raw += (_TAGS["id_text"], _varint(len(id_text)), id_text)
    else:
        out.id.extend(ids)
    if fixed:  # times: never equal nor small enough to pack
        raw += _fixed("started_at", started)
        raw += _fixed("first_byte_at", first_byte)
        raw += _fixed("ended_at", ended)
    else:
        out.started_at.extend(started)
        out.first_byte_at.extend(first_byte)
        out.ended_at.extend(ended)
    packed = [
        _packed(out, name, column, raw if fixed else None)
        for names, values in (
            (HAPPENED_COLUMNS[4:], numbers),
            (TOKEN_KINDS, zip(*tokens, strict=True)),
        )
        for name, column in zip(names, values, strict=True)
    ]
    if fixed:
        raw += packed
    else:
        out.MergeFromString(b"".join(packed))
    if any(tool_calls):
        for i in compress(range(n), tool_calls):
            for name, call_id, arguments in tool_calls[i]:
                out.tool_call_record.append(i)
                out.tool_call_name.append(name)
                out.tool_call_id.append(call_id)
                out.tool_call_arguments.append(arguments)
    if any(prompts):
        with_prompt = list(compress(range(n), prompts))
        out.prompt_record.extend(with_prompt)
        out.prompt.extend(prompts[i] for i in with_prompt)
    return raw


_DESCRIPTION, _CALLS, _PROMPT = itemgetter(0), itemgetter(10), itemgetter(11)  # of `Values`


def _described_cost(description: Description) -> int:
    """An upper bound of the bytes a description adds to a batch (its texts in the
    string table, its values in the description columns)."""
    return sum(len(t.encode()) + 6 for t in description if isinstance(t, str))


def _calls_cost(calls: tuple[ToolCall, ...]) -> int:
    return sum(len(f"{n}{c}{a}".encode()) + 30 for n, c, a in calls)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Each column's tag as a packed field (wire type 2) of InterceptionColumns.
_TAGS = {f.name: _varint(f.number << 3 | 2) for f in pb.InterceptionColumns.DESCRIPTOR.fields}
# RecordInterceptionsRequest.fixed_columns's tag (a payload of the fixed form starts with it).
_FIXED_REQUEST = _varint(
    pb.RecordInterceptionsRequest.DESCRIPTOR.fields_by_name["fixed_columns"].number << 3 | 2
)


def is_fixed(payload: bytes) -> bool:
    """Whether a payload of `Batch.encode` is of the fixed form (`fixed_columns`)."""
    return payload.startswith(_FIXED_REQUEST)


def unfix(payload: bytes) -> bytes:
    """A payload of the fixed form as the same records in `columns` (for a service from
    before `fixed_columns`, which ignores them); any other payload as it is."""
    request = pb.RecordInterceptionsRequest.FromString(payload)
    if not request.HasField("fixed_columns") or request.HasField("columns"):
        return payload  # (a payload of `Batch.encode` has one form)
    plain = request.columns
    plain.CopyFrom(request.fixed_columns)
    request.ClearField("fixed_columns")
    if plain.id_text:
        plain.id.extend(ids_from_text(plain.id_text))
        plain.ClearField("id_text")
    for name in FIXED_COLUMNS:
        fixed = getattr(plain, name + "_fixed")
        if len(fixed):
            getattr(plain, name).extend(fixed)
            plain.ClearField(name + "_fixed")  # type: ignore[arg-type]
    return request.SerializeToString()


def _packed(
    out: pb.InterceptionColumns,
    name: str,
    column: Sequence[int],
    raw: list[bytes] | None = None,
) -> bytes:
    """A column of varint values (ints, enums, bools) as its packed field on the wire,
    for `MergeFromString`, when C can write it: every value the same (status 200,
    attempts 1, a count of 0: one varint repeated), or every value within 0..127 (each
    its own varint byte: `bytes(column)`). Else, given `raw` and when the column has a
    fixed-width form, that form appended to `raw`; else extended into `out` value by
    value (upb spends ~400 instructions per value there; parsing the packed bytes costs
    a few). b"" returned in both."""
    if not column:
        return b""
    first = column[0]
    if first >= 0 and column.count(first) == len(column):
        payload = _varint(first) * len(column)
    elif min(column) >= 0 and max(column) < 0x80:
        payload = bytes(column)
    elif raw is not None and name in FIXED_COLUMNS:
        raw += _fixed(name, column)
        return b""
    else:
        getattr(out, name).extend(column)
        return b""
    return _TAGS[name] + _varint(len(payload)) + payload


# The fixed-width fields' array types (fixed32: status codes; fixed64: the rest).
# ("L" where it is 8 bytes: its conversion is ~40 % cheaper than "Q"'s)
_U64 = "L" if array("L").itemsize == 8 else "Q"
_WIDTH = {name: "I" if name == "status_code" else _U64 for name in FIXED_COLUMNS}
assert array("I").itemsize == 4
assert array(_U64).itemsize == 8
_SWAP = sys.byteorder != "little"  # the wire's fixed-width values are little-endian


def _fixed(name: str, column: Sequence[int]) -> tuple[bytes, bytes, bytes]:
    """`column` as its packed fixed-width field (`<name>_fixed`) on the wire, in pieces
    (tag, length, values: one copy). OverflowError for a value outside the width
    (negative, or past it)."""
    values = array(_WIDTH[name], column)
    if _SWAP:
        values.byteswap()
    payload = values.tobytes()
    return _TAGS[name + "_fixed"], _varint(len(payload)), payload


def split(payload: bytes) -> tuple[list[bytes], list[str]]:
    """A payload (either form) halved, as payloads; ([], its record ids) when it holds one
    record or none, or cannot be read."""
    try:
        request = pb.RecordInterceptionsRequest.FromString(unfix(payload))
    except Exception:  # DecodeError: nothing to split
        return [], []
    rows = list(request.interceptions)
    cols = request.columns
    total = len(rows) + len(cols.id)
    if total <= 1:
        return [], [r.id for r in rows] + list(cols.id)
    half = total // 2
    parts: list[bytes] = []
    for lo, hi in ((0, half), (half, total)):
        part = pb.RecordInterceptionsRequest(interceptions=rows[lo:hi])
        a, b = max(lo - len(rows), 0), max(hi - len(rows), 0)
        if b > a:
            part.columns.CopyFrom(slice_columns(cols, a, b))
        parts.append(part.SerializeToString())
    return parts, []


def slice_columns(cols: pb.InterceptionColumns, lo: int, hi: int) -> pb.InterceptionColumns:
    """Records lo..hi of `cols`, with the descriptions they use (the string table whole:
    the service checks only the texts a description names)."""
    out = pb.InterceptionColumns()
    out.strings.extend(cols.strings)
    used = dict.fromkeys(cols.description[lo:hi], 0)
    for i, index in enumerate(used):
        used[index] = i
    for name in DESCRIPTION_COLUMNS:
        column = getattr(cols, name)
        getattr(out, name).extend(column[index] for index in used)
    for name in RECORD_COLUMNS:
        values = getattr(cols, name)[lo:hi]
        getattr(out, name).extend(
            map(used.__getitem__, values) if name == "description" else values
        )
    for i, record in enumerate(cols.tool_call_record):
        if lo <= record < hi:
            out.tool_call_record.append(record - lo)
            out.tool_call_name.append(cols.tool_call_name[i])
            out.tool_call_id.append(cols.tool_call_id[i])
            out.tool_call_arguments.append(cols.tool_call_arguments[i])
    for i, record in enumerate(cols.prompt_record):
        if lo <= record < hi:
            out.prompt_record.append(record - lo)
            out.prompt.append(cols.prompt[i])
    return out


class Message:
    """A record given as a `usage_pb2.Interception` (a client of the shipper that has one)."""

    __slots__ = ("message",)

    def __init__(self, message: usage_pb2.Interception) -> None:
        self.message = message

    @property
    def id(self) -> str:
        return self.message.id

    def values(self) -> Values:
        return message_values(self.message)


def message_values(record: usage_pb2.Interception) -> Values:
    """The values of a record given as a message."""
    description: Description = (
        record.provider_name,
        record.provider_type,
        record.route,
        record.requested_model,
        record.served_model,
        record.principal_id,
        record.principal_name,
        record.token_id,
        record.client,
        record.user_agent,
        record.session_id,
        record.credential_kind,
        record.credential_hint,
        record.proxied,
    )
    u = record.usage
    tokens = tuple(getattr(u, name) for name in TOKEN_KINDS)
    return (
        description,
        record.id,
        _ns(record, "started_at"),
        _ns(record, "first_byte_at"),
        _ns(record, "ended_at"),
        record.outcome,
        record.status_code,
        record.attempts,
        record.streamed,
        tokens if any(tokens) else NO_TOKENS,
        tuple((c.name, c.call_id, c.arguments) for c in record.tool_calls),
        record.prompt,
    )


def _ns(record: usage_pb2.Interception, name: str) -> int:
    if not record.HasField(name):  # type: ignore[arg-type]
        return 0
    ts = getattr(record, name)
    return int(ts.seconds) * 1_000_000_000 + int(ts.nanos)
