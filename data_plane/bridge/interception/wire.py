"""The fields of an interception record that every request has (id, times, outcome,
counts, usage) written straight in protobuf's wire format: what `record.Capture`
serializes on every request, at a fraction of the cost of building a message to
serialize. Field numbers come from the generated descriptors, and zero values are left
out as protobuf leaves them out; a message's serialized fields concatenated parse as one
message, so these bytes join the ones serialized the usual way.
"""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from aibridge.config.v1 import usage_pb2

_VARINT, _LENGTH = 0, 2
_SMALL = [bytes((n,)) for n in range(0x80)]


def varint(n: int) -> bytes:
    """A non-negative integer as a protobuf varint."""
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tags(message: type[object], wire_type: int, *names: str) -> tuple[bytes, ...]:
    fields = message.DESCRIPTOR.fields_by_name  # type: ignore[attr-defined]
    return tuple(varint(fields[name].number << 3 | wire_type) for name in names)


ID, STARTED_AT, FIRST_BYTE_AT, ENDED_AT, USAGE = _tags(
    usage_pb2.Interception, _LENGTH, "id", "started_at", "first_byte_at", "ended_at", "usage"
)
OUTCOME, STATUS_CODE, ATTEMPTS, STREAMED = _tags(
    usage_pb2.Interception, _VARINT, "outcome", "status_code", "attempts", "streamed"
)
_SECONDS, _NANOS = _tags(timestamp_pb2.Timestamp, _VARINT, "seconds", "nanos")
TOKENS = dict(
    zip(
        (f.name for f in usage_pb2.TokenUsage.DESCRIPTOR.fields),
        _tags(
            usage_pb2.TokenUsage,
            _VARINT,
            *(f.name for f in usage_pb2.TokenUsage.DESCRIPTOR.fields),
        ),
        strict=True,
    )
)


def number(tag: bytes, value: int) -> bytes:
    """A varint field (an int, an enum, a bool), left out when zero."""
    return tag + varint(value) if value else b""


def ascii_text(tag: bytes, value: str) -> bytes:
    """A string field of ASCII text (an id)."""
    return tag + varint(len(value)) + value.encode("ascii")


def timestamp(tag: bytes, ns: int) -> bytes:
    """A google.protobuf.Timestamp field, from nanoseconds since the epoch."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    body = number(_SECONDS, seconds) + number(_NANOS, nanos)
    return tag + varint(len(body)) + body


def usage(tokens: dict[str, int]) -> bytes:
    """The usage field (a TokenUsage) from counts by field name."""
    body = b"".join(number(TOKENS[name], count) for name, count in tokens.items())
    return USAGE + varint(len(body)) + body
