"""Which field of a request body that does not parse is malformed on the wire.

The protobuf library says only that a body is corrupt. `malformed_field` walks the body
against its message's descriptor, as the parser does, and names the first field that does
not hold together (`fixed_columns.input_tokens_fixed`, `interceptions[2].route`), with why:
a packed fixed-width column of a ragged byte length, a length past the end, a string that
is not UTF-8, a varint that does not end. It runs only on a body that failed to parse (the
cold path), reads at most MAX_STEPS fields (about what parsing and checking a valid
5,000-record batch costs: a malformed body must not cost more than a good one; past
that the body is refused as a whole), and never quotes a value: the body may carry a
secret.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

_MAX_DEPTH = 100  # the parser's recursion limit
MAX_STEPS = 20_000  # fields read at most (~1.5 µs each)
_WIDTHS = {  # packed fixed-width types and their widths
    FieldDescriptor.TYPE_FIXED64: 8,
    FieldDescriptor.TYPE_SFIXED64: 8,
    FieldDescriptor.TYPE_DOUBLE: 8,
    FieldDescriptor.TYPE_FIXED32: 4,
    FieldDescriptor.TYPE_SFIXED32: 4,
    FieldDescriptor.TYPE_FLOAT: 4,
}
_WIRE_TYPE = {  # the wire type of each scalar type (anything else is length-delimited)
    **{t: 1 for t, w in _WIDTHS.items() if w == 8},
    **{t: 5 for t, w in _WIDTHS.items() if w == 4},
    **{
        t: 0
        for t in (
            FieldDescriptor.TYPE_INT64,
            FieldDescriptor.TYPE_UINT64,
            FieldDescriptor.TYPE_INT32,
            FieldDescriptor.TYPE_UINT32,
            FieldDescriptor.TYPE_SINT64,
            FieldDescriptor.TYPE_SINT32,
            FieldDescriptor.TYPE_BOOL,
            FieldDescriptor.TYPE_ENUM,
        )
    },
}


class _TooLong(Exception):
    """The walk passed MAX_STEPS."""


class _Malformed(Exception):
    def __init__(self, path: str, why: str) -> None:
        super().__init__(path, why)
        self.path = path
        self.why = why


def malformed_field(descriptor: Descriptor, raw: bytes) -> tuple[str, str] | None:
    """(the field's path, why) of the first field of `raw` that is malformed as a
    `descriptor` message; None when none is found (the body is then refused as a whole)."""
    try:
        _message(descriptor, memoryview(raw), "", 0, [MAX_STEPS])
    except _Malformed as exc:
        return exc.path or "request", exc.why
    except Exception:  # _TooLong; a walk that went wrong must not make a refusal an error
        return None
    return None


_FIELDS: dict[str, dict[int, FieldDescriptor]] = {}


def _fields(descriptor: Descriptor | None) -> dict[int, FieldDescriptor]:
    """A message's fields by number (upb makes its mapping anew at each access)."""
    if descriptor is None:
        return {}
    fields = _FIELDS.get(descriptor.full_name)
    if fields is None:
        fields = _FIELDS[descriptor.full_name] = dict(descriptor.fields_by_number)
    return fields


def _varint(data: memoryview, pos: int, path: str) -> tuple[int, int]:
    value = shift = 0
    for i in range(pos, min(pos + 10, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    raise _Malformed(path, "a varint that does not end")


def _message(
    descriptor: Descriptor | None,
    data: memoryview,
    prefix: str,
    depth: int,
    budget: list[int],
    pos: int = 0,
) -> int:
    """Walk the fields of `data` from `pos` (to its end, or, in a group, to the group's
    end: the position after it), each taken from `budget`."""
    if depth > _MAX_DEPTH:
        raise _Malformed(prefix, "nested too deeply")
    counts: dict[int, int] = {}
    group = descriptor is None
    fields = _fields(descriptor)
    while pos < len(data):
        budget[0] -= 1
        if budget[0] < 0:
            raise _TooLong
        key, pos = _varint(data, pos, prefix or "request")
        number, wire = key >> 3, key & 7
        if wire == 4 and group:  # the end of an (unknown) group
            return pos
        field = fields.get(number)
        name = field.name if field is not None else f"field {number}"
        path = f"{prefix}.{name}" if prefix else name
        if field is not None and field.is_repeated:
            index = counts.get(number, 0)
            counts[number] = index + 1
        else:
            index = -1
        if number == 0:
            raise _Malformed(path, "field number 0")
        if wire == 0:
            _, pos = _varint(data, pos, path)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > len(data):
                raise _Malformed(path, "a fixed-width value past the end of its message")
        elif wire == 2:
            size, pos = _varint(data, pos, path)
            end = pos + size
            if end > len(data):
                raise _Malformed(path, "a length past the end of its message")
            if field is not None:
                _delimited(field, data[pos:end], path, index, depth, budget)
            pos = end
        elif wire == 3:  # a group: an unknown field's, proto3 declares none
            pos = _message(None, data, path, depth + 1, budget, pos)
        else:  # an end of group outside one; 6 and 7 are no wire type
            raise _Malformed(path, f"wire type {wire} here")
    if group:
        raise _Malformed(prefix, "a group that does not end")
    return pos


def _delimited(
    field: FieldDescriptor, value: memoryview, path: str, index: int, depth: int, budget: list[int]
) -> None:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        at = f"{path}[{index}]" if index >= 0 else path
        _message(field.message_type, value, at, depth + 1, budget)
    elif kind == FieldDescriptor.TYPE_STRING:
        try:
            bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            at = f"{path}[{index}]" if index >= 0 else path
            raise _Malformed(at, "text that is not UTF-8") from None
    elif kind in _WIDTHS and index >= 0:  # packed
        width = _WIDTHS[kind]
        if len(value) % width:
            raise _Malformed(
                path, f"packed values of {width} bytes each in {len(value)} bytes (a ragged length)"
            )
    elif _WIRE_TYPE.get(kind) == 0 and index >= 0 and len(value) and value[-1] & 0x80:
        raise _Malformed(path, "packed varints whose last does not end")
