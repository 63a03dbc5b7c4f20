"""RecordInterceptions' fixed_columns attacked at the transport: a real config service on
port 0 (SQLite and PostgreSQL), the bridge token, and requests built here field by field
(or byte by byte where the protobuf library would refuse to write them). A bad batch is
refused INVALID_ARGUMENT naming its field and stores nothing; ids stay idempotent in every
form and across forms; only the bridge writes; no secret reaches an answer or a log line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import grpc.aio
import pytest
from structlog.testing import capture_logs

from aibridge import recording
from aibridge.config.v1 import usage_pb2
from aibridge.config.v1 import usage_service_pb2 as pb
from aibridge.recording import FIXED_COLUMNS, ID_LENGTH, MAX_TOKEN_COUNT, new_record_id
from config_service.db.models import Interception, InterceptionToolCall
from config_service.rbac import Role
from data_plane.recording.batch import columns, message_values
from tests.config_service.test_usage import FULL_KEY, NOW, Usage, count_rows, make
from tests.fixtures.services import BRIDGE_TOKEN, Service

_METHOD = "/aibridge.config.v1.UsageService/RecordInterceptions"
_EPOCH_NS = int(datetime(1970, 1, 1, tzinfo=UTC).timestamp())


@pytest.fixture
async def u(service: Service) -> Usage:
    return Usage(service)


def fixed(records: Sequence[usage_pb2.Interception]) -> pb.InterceptionColumns:
    """`records` as columns with every fixed-width field in use: the ids as one text, the
    times, statuses and token counts fixed-width (whatever their values)."""
    c = columns([message_values(r) for r in records])
    c.id_text = "".join(c.id).encode("ascii")
    c.ClearField("id")
    for name in FIXED_COLUMNS:
        getattr(c, name + "_fixed").extend(getattr(c, name))
        c.ClearField(name)  # type: ignore[arg-type]
    return c


def as_fixed(records: Sequence[usage_pb2.Interception]) -> pb.RecordInterceptionsRequest:
    return pb.RecordInterceptionsRequest(fixed_columns=fixed(records))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) on the wire."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


async def send_raw(
    u: Usage, payload: bytes, role: Role = Role.BRIDGE
) -> pb.RecordInterceptionsResponse:
    call = u.svc.channel().unary_unary(
        _METHOD,
        request_serializer=None,
        response_deserializer=pb.RecordInterceptionsResponse.FromString,
    )
    answer: pb.RecordInterceptionsResponse = await call(payload, metadata=u.svc.md_for(role))
    return answer


async def refused(u: Usage, request: pb.RecordInterceptionsRequest | bytes) -> str:
    """The details of the INVALID_ARGUMENT the request is answered with; nothing stored."""
    payload = request if isinstance(request, bytes) else request.SerializeToString()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await send_raw(u, payload)
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    assert count_rows(u.svc, Interception) == 0
    assert count_rows(u.svc, InterceptionToolCall) == 0
    return error.value.details() or ""


def two(u: Usage) -> list[usage_pb2.Interception]:
    calls = [usage_pb2.ToolCall(name="f", call_id="c1", arguments="{}")]
    return [make(u.member_id, tokens_in=300, tool_calls=calls), make(u.member_id, tokens_in=7)]


# ------------------------------------------------------------------------------ ids


@pytest.mark.parametrize("cut", [1, ID_LENGTH - 1, ID_LENGTH + 1, 2 * ID_LENGTH - 1])
async def test_id_text_not_a_whole_number_of_ids_is_refused(u: Usage, cut: int) -> None:
    """An id_text whose length is not a multiple of the id width is refused naming fixed_columns.id_text."""
    request = as_fixed(two(u))
    request.fixed_columns.id_text = request.fixed_columns.id_text[:cut]
    assert (await refused(u, request)).startswith("fixed_columns.id_text:")


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        (lambda t: "é".encode() + t[2:], "fixed_columns.id_text"),  # 2 bytes, non-ASCII
        (lambda t: b"\xff" + t[1:], "fixed_columns.id_text"),
        (lambda t: b"\x00" + t[1:], "fixed_columns.id[0]"),
        (lambda t: t[:40] + b"\n" + t[41:], "fixed_columns.id[1]"),
        (lambda t: t[:-1] + b"\x1b", "fixed_columns.id[1]"),
        (lambda t: b" " * ID_LENGTH + t[ID_LENGTH:], "fixed_columns.id[0]"),
        (lambda t: t.replace(b"-", b"0"), "fixed_columns.id[0]"),
    ],
)
async def test_id_text_that_is_not_ascii_uuids_is_refused(
    u: Usage, damage: Any, field: str
) -> None:
    """Non-ASCII, NUL, newline, control bytes, spaces or hex without hyphens in id_text refuse the batch naming it."""
    request = as_fixed(two(u))
    request.fixed_columns.id_text = damage(request.fixed_columns.id_text)
    assert (await refused(u, request)).startswith(field + ":")


async def test_ids_out_of_time_order_and_repeated_are_stored_once(u: Usage) -> None:
    """Ids not in time order, repeated inside a fixed_columns batch and across batches, store each record once and count the rest as duplicates."""
    records = [make(u.member_id, NOW - timedelta(seconds=s)) for s in (1, 9, 3, 7)]
    batch = [records[3], records[0], records[2], records[0], records[1], records[3]]
    answer = await u.send(as_fixed(batch))
    assert (answer.inserted, answer.duplicates) == (4, 2)
    again = await u.send(as_fixed([records[1], make(u.member_id), records[1]]))
    assert (again.inserted, again.duplicates) == (1, 2)
    assert count_rows(u.svc, Interception) == 5
    assert {r.id for r in records} <= {r.id for r in await u.list_all()}


async def test_one_id_in_every_form_is_stored_once(u: Usage) -> None:
    """The same records sent one by one, as columns and as fixed_columns, in one request and across requests (an id upper-cased in id_text too), are stored once each."""
    records = two(u)
    first = await u.send(as_fixed(records))
    assert (first.inserted, first.duplicates) == (2, 0)
    upper = as_fixed(records)
    upper.fixed_columns.id_text = upper.fixed_columns.id_text.upper()
    for request in (
        pb.RecordInterceptionsRequest(interceptions=records),
        pb.RecordInterceptionsRequest(columns=columns([message_values(r) for r in records])),
        upper,
    ):
        answer = await u.send(request)
        assert (answer.inserted, answer.duplicates) == (0, 2)
    new = [make(u.member_id), make(u.member_id)]
    mixed = pb.RecordInterceptionsRequest(
        interceptions=[new[0]],
        columns=columns([message_values(r) for r in [new[1], records[0]]]),
        fixed_columns=fixed([new[0], new[1], records[1]]),
    )
    answer = await u.send(mixed)
    assert (answer.inserted, answer.duplicates) == (2, 4)
    assert count_rows(u.svc, Interception) == 4
    assert count_rows(u.svc, InterceptionToolCall) == 1


async def test_an_id_in_both_columns_and_fixed_columns_keeps_the_first(u: Usage) -> None:
    """An id sent in columns and again, with other values, in fixed_columns of the same request is stored once, as columns said."""
    record = make(u.member_id, tokens_in=11)
    other = usage_pb2.Interception()
    other.CopyFrom(record)
    other.usage.input_tokens = 99
    request = pb.RecordInterceptionsRequest(
        columns=columns([message_values(record)]), fixed_columns=fixed([other])
    )
    answer = await u.send(request)
    assert (answer.inserted, answer.duplicates) == (1, 1)
    assert (await u.get(record.id)).usage.input_tokens == 11


async def test_one_batch_in_every_form_at_once_is_stored_once(u: Usage) -> None:
    """The same records sent concurrently one by one, as columns and as fixed_columns (a retry racing the original through another form) are stored once each."""
    records = [make(u.member_id, tool_calls=two(u)[0].tool_calls) for _ in range(200)]
    requests = [
        pb.RecordInterceptionsRequest(interceptions=records),
        pb.RecordInterceptionsRequest(columns=columns([message_values(r) for r in records])),
        as_fixed(records),
        as_fixed(records[::-1]),
    ]
    answers = await asyncio.gather(*(u.send(r) for r in requests))
    assert sum(a.inserted for a in answers) == 200
    assert sum(a.duplicates for a in answers) == 3 * 200
    assert count_rows(u.svc, Interception) == 200
    assert count_rows(u.svc, InterceptionToolCall) == 200


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        (lambda c: c.prompt_record.append(2), "fixed_columns.prompt"),
        (
            lambda c: (c.prompt_record.append(2), c.prompt.append("p")),
            "fixed_columns.prompt_record[0]",
        ),
        (lambda c: c.tool_call_record.__setitem__(0, 2), "fixed_columns.tool_call_record[0]"),
        (lambda c: c.tool_call_name.append("g"), "fixed_columns.tool_call_name"),
        (lambda c: c.credential_kind.append(99), "fixed_columns.credential_kind"),
        (lambda c: c.outcome.__setitem__(1, 0), "fixed_columns.outcome[1]"),
    ],
)
async def test_side_columns_out_of_step_with_the_records_are_refused(
    u: Usage, damage: Any, field: str
) -> None:
    """Prompts and tool calls naming a record past the batch, side columns of unequal lengths, an unknown enum are refused naming the column."""
    request = as_fixed(two(u))
    damage(request.fixed_columns)
    details = await refused(u, request)
    assert details.startswith(field), details


# ------------------------------------------------------------------------------ fixed widths


@pytest.mark.parametrize(("number", "size"), [(37, 8), (41, 8), (45, 8), (40, 4)])
@pytest.mark.parametrize("extra", [-1, 1, 3])
async def test_a_fixed_column_of_a_ragged_byte_length_is_refused_naming_it(
    u: Usage, number: int, size: int, extra: int
) -> None:
    """A packed fixed64 (fixed32) column whose byte length is not a multiple of 8 (4) is refused INVALID_ARGUMENT naming the column, never UNKNOWN, and stores nothing."""
    body = fixed(two(u))
    name = pb.InterceptionColumns.DESCRIPTOR.fields_by_number[number].name
    body.ClearField(name)  # type: ignore[arg-type]
    ragged = _field(number, b"\x01" * (2 * size + extra))
    payload = _field(3, body.SerializeToString() + ragged)
    details = await refused(u, payload)
    assert details.startswith(f"fixed_columns.{name}: malformed request"), details
    assert "RecordInterceptions" in details


def _strings_body(u: Usage, last: bytes) -> bytes:
    """A fixed_columns batch whose encoded body ends with `last` inside fixed_columns."""
    return _field(3, fixed(two(u)).SerializeToString() + last)


@pytest.mark.parametrize(
    ("tail", "field"),
    [
        (_field(1, b"ok") + _field(1, b"\xff\xfe"), "fixed_columns.strings[11]"),  # 10 before
        (bytes([0x0A, 0x7F]) + b"short", "fixed_columns.strings"),
        (bytes([0xB0, 0x02]) + b"\xff" * 3, "fixed_columns.first_byte_at_fixed"),  # as varint
        (bytes([0x1F]), "fixed_columns.provider_type"),  # field 3, wire type 7
        (bytes([0xFA, 0x7F, 0x10, 0x01]), "fixed_columns.field 2047"),  # unknown, too short
    ],
)
async def test_a_field_that_does_not_parse_is_named(u: Usage, tail: bytes, field: str) -> None:
    """Text that is not UTF-8, a length past the end, a varint that does not end or no wire type are refused naming the field, never quoting it."""
    details = await refused(u, _strings_body(u, tail))
    assert details.startswith(field + ":"), details
    assert "\\xff" not in details and "short" not in details


@pytest.mark.parametrize("name", ["started_at", "ended_at", "status_code", "output_tokens"])
@pytest.mark.parametrize("change", ["more", "fewer", "none"])
async def test_a_fixed_column_whose_length_disagrees_with_the_records_is_refused(
    u: Usage, name: str, change: str
) -> None:
    """A fixed-width column with more, fewer or no values than records is refused naming the column."""
    request = as_fixed(two(u))
    column = getattr(request.fixed_columns, name + "_fixed")
    values = list(column)
    column[:] = {"more": [*values, values[0]], "fewer": values[:1], "none": []}[change]
    details = await refused(u, request)
    assert details.startswith(f"fixed_columns.{name}:"), details


async def test_zero_records_with_columns_is_refused(u: Usage) -> None:
    """A fixed_columns batch with no ids but values in its columns is refused, not read as empty."""
    request = as_fixed(two(u))
    request.fixed_columns.ClearField("id_text")
    assert (await refused(u, request)).startswith("fixed_columns.")


async def test_an_empty_fixed_columns_batch_stores_nothing(u: Usage) -> None:
    """fixed_columns present but empty is a batch of no records: answered 0 stored, with the service's word."""
    request = pb.RecordInterceptionsRequest(fixed_columns=pb.InterceptionColumns())
    assert request.HasField("fixed_columns")
    answer = await u.send(request)
    assert (answer.inserted, answer.duplicates, answer.reads_fixed_columns) == (0, 0, True)


@pytest.mark.parametrize(
    "value",
    [MAX_TOKEN_COUNT + 1, 2**63 - 1, 2**63, 2**64 - 1],  # the last: -1 as fixed64
)
async def test_a_huge_token_count_is_refused(u: Usage, value: int) -> None:
    """A token count past the bound (2^63-1, or a negative number written as fixed64) is refused naming its record."""
    request = as_fixed(two(u))
    request.fixed_columns.reasoning_tokens_fixed[1] = value
    assert (await refused(u, request)).startswith("fixed_columns.reasoning_tokens[1]:")


async def test_the_largest_token_count_is_stored(u: Usage) -> None:
    """A token count at the bound is stored and read back as sent."""
    records = two(u)
    request = as_fixed(records)
    request.fixed_columns.input_tokens_fixed[0] = MAX_TOKEN_COUNT
    await u.send(request)
    assert (await u.get(records[0].id)).usage.input_tokens == MAX_TOKEN_COUNT


async def test_the_summary_of_full_batches_of_the_largest_counts_is_exact(u: Usage) -> None:
    """Two full batches of records at the largest token count a record may say are summed exactly, in total and by group, never UNAVAILABLE or INTERNAL (a BIGINT sum that overflows)."""
    for _ in range(2):
        request = many(u, recording.MAX_BATCH)
        request.fixed_columns.input_tokens_fixed[:] = [MAX_TOKEN_COUNT] * recording.MAX_BATCH
        await u.send(request)
    want = 2 * recording.MAX_BATCH * MAX_TOKEN_COUNT
    assert (await u.summary([])).total.usage.input_tokens == want
    grouped = await u.summary([pb.USAGE_DIMENSION_PRINCIPAL, pb.USAGE_DIMENSION_DAY])
    assert sum(g.counts.usage.input_tokens for g in grouped.groups) == want


@pytest.mark.parametrize("value", [1, 99, 600, 2**31, 2**32 - 1])
async def test_a_status_out_of_range_as_fixed32_is_refused(u: Usage, value: int) -> None:
    """A fixed32 status that is no HTTP status (2^32-1 included: -1 as fixed32) is refused naming its record."""
    request = as_fixed(two(u))
    request.fixed_columns.status_code_fixed[0] = value
    assert (await refused(u, request)).startswith("fixed_columns.status_code[0]:")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("started_at", 0),
        ("started_at", 2**64 - 1),  # -1 as fixed64
        ("started_at", 2**63),
        ("ended_at", 2**64 - 1),
        ("first_byte_at", 2**64 - 1),
    ],
)
async def test_a_time_beyond_what_a_record_may_say_is_refused(
    u: Usage, name: str, value: int
) -> None:
    """A time of 0, or a fixed64 time past what int64 nanoseconds (the columns form) can say (a negative int64 read unsigned, in the 2500s), is refused naming its record."""
    request = as_fixed(two(u))
    getattr(request.fixed_columns, name + "_fixed")[1] = value
    details = await refused(u, request)
    assert details.startswith(f"fixed_columns.{name}[1]:"), details


async def test_far_past_and_far_future_times_read_back_as_sent(u: Usage) -> None:
    """Times at the edges that are accepted (1 ns after the epoch; int64's last nanosecond) are stored and read back, listed and summarized."""
    records = two(u)
    request = as_fixed(records)
    c = request.fixed_columns
    c.started_at_fixed[:] = [1_000, 2**63 - 2_000]
    c.ended_at_fixed[:] = [2_000, 2**63 - 1]
    c.first_byte_at_fixed[:] = [0, 0]
    await u.send(request)
    past, future = [await u.get(r.id) for r in records]
    assert past.started_at.ToNanoseconds() == 1_000
    assert future.ended_at.ToNanoseconds() == (2**63 - 1) // 1000 * 1000
    assert len(await u.list_all()) == 2
    assert (await u.summary([pb.USAGE_DIMENSION_DAY])).total.requests == 2


@pytest.mark.parametrize(
    ("starts", "firsts", "ends"),
    [
        ((5_000, 5_000), (0, 0), (5_000, 4_999)),  # ended before started
        ((5_000, 5_000), (0, 4_000), (5_000, 6_000)),  # first byte before started
        ((5_000, 5_000), (0, 7_000), (5_000, 6_000)),  # first byte after ended
    ],
)
async def test_times_out_of_order_are_refused(
    u: Usage, starts: tuple[int, ...], firsts: tuple[int, ...], ends: tuple[int, ...]
) -> None:
    """A record that ended before it started, or whose first byte lies outside, is refused naming it."""
    request = as_fixed(two(u))
    base = 1_700_000_000 * 10**9
    c = request.fixed_columns
    c.started_at_fixed[:] = [base + s * 1000 for s in starts]
    c.first_byte_at_fixed[:] = [base + f * 1000 if f else 0 for f in firsts]
    c.ended_at_fixed[:] = [base + e * 1000 for e in ends]
    assert (await refused(u, request)).startswith("fixed_columns.ended_at[1]:")


# ------------------------------------------------------------------------------ forms


async def test_columns_and_fixed_columns_in_one_request_are_both_stored(u: Usage) -> None:
    """A request with both columns and fixed_columns stores the records of each."""
    a, b = two(u), [make(u.member_id), make(u.member_id)]
    request = pb.RecordInterceptionsRequest(
        columns=columns([message_values(r) for r in a]), fixed_columns=fixed(b)
    )
    answer = await u.send(request)
    assert (answer.inserted, answer.duplicates) == (4, 0)
    assert {r.id for r in await u.list_all()} == {r.id for r in a + b}


async def test_a_plain_column_given_twice_inside_fixed_columns_is_refused(u: Usage) -> None:
    """A column in fixed_columns given both plain and fixed-width is refused naming it, as are ids given both ways."""
    request = as_fixed(two(u))
    request.fixed_columns.status_code.extend(request.fixed_columns.status_code_fixed)
    assert (await refused(u, request)).startswith("fixed_columns.status_code:")


# ------------------------------------------------------------------------------ size


def many(u: Usage, n: int) -> pb.RecordInterceptionsRequest:
    """n records of one description, as fixed_columns: small on the wire."""
    one = fixed([make(u.member_id)])
    c = pb.InterceptionColumns()
    c.CopyFrom(one)
    c.id_text = "".join(new_record_id() for _ in range(n)).encode("ascii")
    for name in recording.RECORD_COLUMNS:
        if name == "id":
            continue
        column = getattr(c, name + "_fixed") if name in FIXED_COLUMNS else getattr(c, name)
        column[:] = list(column) * n
    return pb.RecordInterceptionsRequest(fixed_columns=c)


async def test_a_batch_past_the_record_limit_is_refused_naming_fixed_columns(u: Usage) -> None:
    """More than MAX_BATCH records in fixed_columns (well under the message limit on the wire) are refused naming fixed_columns.id_text."""
    request = many(u, recording.MAX_BATCH + 1)
    assert request.ByteSize() < 1024 * 1024
    assert (await refused(u, request)).startswith("fixed_columns.id_text:")


async def test_a_batch_past_the_record_limit_across_forms_is_refused(u: Usage) -> None:
    """MAX_BATCH records in fixed_columns and one more one by one are refused together, naming fixed_columns (where the limit is passed), nothing stored."""
    request = many(u, recording.MAX_BATCH)
    request.interceptions.append(make(u.member_id))
    assert (await refused(u, request)).startswith("fixed_columns.id_text:")


async def test_a_full_batch_that_expands_is_stored(u: Usage) -> None:
    """MAX_BATCH records sharing one description of long texts (small on the wire, megabytes stored) are stored whole."""
    record = make(u.member_id, user_agent="a" * recording.MAX_USER_AGENT, route="/" + "r" * 199)
    one = fixed([record])
    request = many(u, recording.MAX_BATCH)
    request.fixed_columns.strings[:] = one.strings
    assert request.ByteSize() < 1024 * 1024
    answer = await u.send(request)
    assert answer.inserted == recording.MAX_BATCH


@pytest.mark.parametrize("index", [1, 2**32 - 1])
async def test_a_description_index_out_of_range_is_refused(u: Usage, index: int) -> None:
    """A record naming a description that is not there is refused naming its position."""
    request = as_fixed(two(u))
    request.fixed_columns.description[1] = index
    assert (await refused(u, request)).startswith("fixed_columns.description[1]:")


async def test_a_string_index_out_of_range_is_refused(u: Usage) -> None:
    """A description naming a text past the string table is refused naming the column."""
    request = as_fixed(two(u))
    request.fixed_columns.route[0] = len(request.fixed_columns.strings)
    assert (await refused(u, request)).startswith("fixed_columns.route[0]:")


# ------------------------------------------------------------------------------ who and what


@pytest.mark.parametrize("role", [Role.OWNER, Role.AUDITOR, Role.MEMBER, Role.PROXY])
async def test_only_the_bridge_may_write_fixed_columns(u: Usage, role: Role) -> None:
    """Every role but the bridge is answered PERMISSION_DENIED to a fixed_columns batch, and nothing is stored."""
    payload = as_fixed(two(u)).SerializeToString()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await send_raw(u, payload, role)
    assert error.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert count_rows(u.svc, Interception) == 0


@pytest.mark.parametrize(
    "damage",
    [
        lambda c, s: setattr(c, "id_text", s.encode()[:ID_LENGTH] + c.id_text[ID_LENGTH:]),
        lambda c, s: c.strings.__setitem__(c.route[0], "/v1/\x1b" + s),
        lambda c, s: c.strings.__setitem__(c.route[0], s + "x" * recording.MAX_ROUTE),
        lambda c, s: c.tool_call_arguments.__setitem__(0, s + "\x00"),
    ],
)
async def test_no_secret_reaches_an_error_or_a_log_line(u: Usage, damage: Any) -> None:
    """A refused batch carrying the bridge token or a full key in a bad field names the field, never the value, in the answer and in every log line."""
    for secret in (BRIDGE_TOKEN, FULL_KEY):
        request = as_fixed(two(u))
        damage(request.fixed_columns, secret)
        with capture_logs() as logs:
            details = await refused(u, request)
        for text in (details, repr(logs)):
            assert secret not in text
            assert secret[:12] not in text


async def test_no_single_byte_change_of_a_batch_is_answered_unknown_or_internal(u: Usage) -> None:
    """Every one-byte change of a fixed_columns batch is answered OK or INVALID_ARGUMENT, never UNKNOWN or INTERNAL."""
    payload = bytearray(as_fixed(two(u)).SerializeToString())
    codes: set[grpc.StatusCode] = set()
    for i in range(0, len(payload), max(1, len(payload) // 120)):
        for flip in (0x01, 0x80, 0xFF):
            damaged = bytearray(payload)
            damaged[i] ^= flip
            try:
                await send_raw(u, bytes(damaged))
                codes.add(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as exc:
                codes.add(exc.code())
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}, codes
