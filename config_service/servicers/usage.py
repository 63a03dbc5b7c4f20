"""UsageService: the bridge records interceptions; owners, auditors and members read them.

Every field of a record is checked here, at the edge, against the bounds of
`aibridge.recording` (which the bridge keeps to): one bad record refuses the whole batch
with INVALID_ARGUMENT naming it (`interceptions[3].route`), so nothing half-valid is
stored. A credential hint that is not a masked hint (a full key, by mistake) is masked
before it is stored: a secret never reaches the table. Access is decided in the store.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from aibridge import recording
from aibridge.config.v1 import provider_pb2, usage_pb2, usage_service_pb2
from aibridge.config.v1 import usage_service_pb2 as pb
from aibridge.config.v1 import usage_service_pb2_grpc as pb_grpc
from aibridge.masking import mask_secret
from aibridge.recording import (
    FIXED_COLUMNS,
    ID_LENGTH,
    MAX_TOKEN_COUNT,
    TOKEN_KINDS,
    enum_names,
    ids_from_text,
)
from aibridge.rulebook import BY_WIRE, TYPES
from config_service.auth import Authenticator
from config_service.errors import InvalidArgument
from config_service.metrics import ConfigMetrics
from config_service.rbac import Action, Subject
from config_service.servicers.edge import unary
from config_service.store import usage
from config_service.store.database import Database
from config_service.text import check_text, check_uuid

Context = grpc.aio.ServicerContext[Any, Any]
Row = dict[str, Any]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_ATTEMPTS = 1000
# What mask_secret produces: up to 4 characters, "...", up to 4 characters (or nothing).
_MASKED = re.compile(r"^(?:[^.]{0,4}\.\.\.[^.]{0,4})?\Z")


def _enum_names(enum: Any, prefix: str) -> dict[int, str]:
    return {value: name.removeprefix(prefix).lower() for name, value in enum.items() if value != 0}


OUTCOMES = _enum_names(usage_pb2.Outcome, "OUTCOME_")
OUTCOMES_FROM = {v: k for k, v in OUTCOMES.items()}
CREDENTIALS = enum_names(usage_pb2.CredentialKind, "CREDENTIAL_KIND_")
CREDENTIALS_FROM = {v: k for k, v in CREDENTIALS.items()}
DIMENSIONS = enum_names(usage_service_pb2.UsageDimension, "USAGE_DIMENSION_")


# ------------------------------------------------------------------------------ checks


def _time(field: str, message: Any, name: str, *, required: bool) -> datetime | None:
    if not message.HasField(name):
        if required:
            raise InvalidArgument(field, "is required")
        return None
    ts: Timestamp = getattr(message, name)
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(field, "is not a valid timestamp") from None


def _count(field: str, value: int, maximum: int) -> int:
    if not 0 <= value <= maximum:
        raise InvalidArgument(field, f"must be between 0 and {maximum}")
    return value


def _content(field: str, value: str, max_length: int) -> str:
    """Free text a person wrote (a prompt, tool arguments): bounded, no NUL."""
    if len(value) > max_length:
        raise InvalidArgument(field, f"must be at most {max_length} characters")
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL characters")
    return value


def _client(field: str, value: str) -> str:
    if value and (len(value) > recording.MAX_CLIENT or not recording.CLIENT_RE.match(value)):
        raise InvalidArgument(
            field, f"must be a lower-case slug such as claude-code (at most {recording.MAX_CLIENT})"
        )
    return value


def credential_hint(field: str, value: str) -> str:
    """The hint as stored: kept when it is a masked hint, otherwise masked here."""
    hint = value if _MASKED.match(value) else mask_secret(value)
    return check_text(field, hint, recording.MAX_HINT)


def _enum(field: str, value: int, names: dict[int, str], *, required: bool) -> str:
    if value == 0 and not required:
        return ""
    name = names.get(value)
    if name is None:
        raise InvalidArgument(field, f"must be one of {', '.join(sorted(names.values()))}")
    return name


def _tool_calls(field: str, record: usage_pb2.Interception, record_id: str) -> list[Row]:
    if len(record.tool_calls) > recording.MAX_TOOL_CALLS:
        raise InvalidArgument(field, f"at most {recording.MAX_TOOL_CALLS} tool calls")
    return [
        {
            "interception_id": record_id,
            "position": i,
            "name": check_text(f"{field}[{i}].name", call.name, recording.MAX_NAME),
            "call_id": check_text(f"{field}[{i}].call_id", call.call_id, recording.MAX_NAME),
            "arguments": _content(
                f"{field}[{i}].arguments", call.arguments, recording.MAX_ARGUMENTS
            ),
        }
        for i, call in enumerate(record.tool_calls)
    ]


def record_row(field: str, r: usage_pb2.Interception) -> tuple[Row, list[Row]]:
    """A record as its table row and tool-call rows; InvalidArgument naming a bad field."""
    f = f"{field}."
    record_id = check_uuid(f + "id", r.id, "a UUID (UUIDv7) record id")
    started = _time(f + "started_at", r, "started_at", required=True)
    ended = _time(f + "ended_at", r, "ended_at", required=True)
    first_byte = _time(f + "first_byte_at", r, "first_byte_at", required=False)
    assert started is not None
    assert ended is not None
    if ended < started or (first_byte is not None and not started <= first_byte <= ended):
        raise InvalidArgument(f + "ended_at", "times must be started <= first byte <= ended")
    known = BY_WIRE.get(r.provider_type) if r.provider_type else None
    provider_type = known.name if known is not None else ""
    if r.provider_type and not provider_type:
        raise InvalidArgument(f + "provider_type", "is not a known provider type")
    if r.status_code and not 100 <= r.status_code <= 599:
        raise InvalidArgument(f + "status_code", "must be an HTTP status (100-599) or 0")
    u = r.usage
    row: Row = {
        "id": record_id,
        "started_at": started,
        "first_byte_at": first_byte,
        "ended_at": ended,
        "provider_name": check_text(f + "provider_name", r.provider_name, recording.MAX_NAME),
        "provider_type": provider_type,
        "route": check_text(f + "route", r.route, recording.MAX_ROUTE),
        "requested_model": check_text(f + "requested_model", r.requested_model, recording.MAX_NAME),
        "served_model": check_text(f + "served_model", r.served_model, recording.MAX_NAME),
        "outcome": _enum(f + "outcome", r.outcome, OUTCOMES, required=True),
        "status_code": r.status_code,
        "principal_id": check_text(f + "principal_id", r.principal_id, 36),
        "principal_name": check_text(f + "principal_name", r.principal_name, recording.MAX_NAME),
        "token_id": check_text(f + "token_id", r.token_id, 36),
        "client": _client(f + "client", r.client),
        "user_agent": check_text(f + "user_agent", r.user_agent, recording.MAX_USER_AGENT),
        "session_id": check_text(f + "session_id", r.session_id, recording.MAX_NAME),
        "credential_kind": _enum(
            f + "credential_kind", r.credential_kind, CREDENTIALS, required=False
        ),
        "credential_hint": credential_hint(f + "credential_hint", r.credential_hint),
        "attempts": _count(f + "attempts", r.attempts, MAX_ATTEMPTS),
        **{
            kind: _count(f"{f}usage.{kind}", getattr(u, kind), MAX_TOKEN_COUNT)
            for kind in TOKEN_KINDS
        },
        "prompt": _content(f + "prompt", r.prompt, recording.MAX_PROMPT),
        "proxied": r.proxied,
        "streamed": r.streamed,
        "tool_call_count": len(r.tool_calls),
    }
    return row, _tool_calls(f + "tool_calls", r, record_id)


def batch_rows(request: pb.RecordInterceptionsRequest) -> tuple[list[Row], list[Row], int]:
    """(rows, tool-call rows, repeats) of every form, the records one by one first, then
    `columns`, then `fixed_columns`: a record repeated within the batch counts once."""
    given = 0
    for form, count in (
        ("interceptions", len(request.interceptions)),
        ("columns", record_count(request.columns, "columns")),
        ("fixed_columns", record_count(request.fixed_columns, "fixed_columns")),
    ):
        given += count
        if given > recording.MAX_BATCH:  # named where the limit is passed
            if form != "interceptions":
                form += ".id_text" if getattr(request, form).id_text else ".id"
            raise InvalidArgument(
                form, f"at most {recording.MAX_BATCH} records per batch (in all its forms)"
            )
    rows: list[Row] = []
    calls: dict[int, list[Row]] = {}  # by the record's position in `rows`
    for i, record in enumerate(request.interceptions):
        row, tool_rows = record_row(f"interceptions[{i}]", record)
        if tool_rows:
            calls[len(rows)] = tool_rows
        rows.append(row)
    for field in ("columns", "fixed_columns"):
        if request.HasField(field):
            more, more_calls = column_rows(getattr(request, field), field)
            base = len(rows)
            calls.update((base + i, tool_rows) for i, tool_rows in more_calls.items())
            rows.extend(more)
    seen: set[str] = set()
    unique: list[Row] = []
    tool_rows = []
    for i, row in enumerate(rows):
        if row["id"] in seen:
            continue
        seen.add(row["id"])
        unique.append(row)
        if i in calls:
            tool_rows.extend(calls[i])
    return unique, tool_rows, given - len(unique)


# The text columns of a description (indexes into the string table): their checks.
_TEXT_COLUMNS: dict[str, Any] = {
    "provider_name": lambda f, v: check_text(f, v, recording.MAX_NAME),
    "route": lambda f, v: check_text(f, v, recording.MAX_ROUTE),
    "requested_model": lambda f, v: check_text(f, v, recording.MAX_NAME),
    "served_model": lambda f, v: check_text(f, v, recording.MAX_NAME),
    "principal_id": lambda f, v: check_text(f, v, 36),
    "principal_name": lambda f, v: check_text(f, v, recording.MAX_NAME),
    "token_id": lambda f, v: check_text(f, v, 36),
    "client": _client,
    "user_agent": lambda f, v: check_text(f, v, recording.MAX_USER_AGENT),
    "session_id": lambda f, v: check_text(f, v, recording.MAX_NAME),
    "credential_hint": credential_hint,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The last nanosecond since the epoch that int64 holds (2262-04-11): what a time in
# `columns` can say, so a fixed-width time past it (a negative int64 written as fixed64,
# read as a time in the 2500s) is refused, not stored: both forms hold the same times.
_MAX_NS = 2**63 - 1


def _distinct(field: str, column: Any, check: Any) -> list[Any]:
    """`check(value)` of each distinct value of `column`, once, per record; InvalidArgument
    naming the first record with a refused value (`field[i]`)."""
    values = list(column)
    checked: dict[Any, Any] = {}
    for value in dict.fromkeys(values):
        try:
            checked[value] = check(value)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{field}[{values.index(value)}]", exc.detail) from None
    return list(map(checked.__getitem__, values))


def _stamp(value: int) -> datetime:
    if not 0 < value <= _MAX_NS:
        raise InvalidArgument("", "is not a valid timestamp (nanoseconds since the epoch)")
    return _EPOCH + timedelta(microseconds=value // 1000)


def _first_byte(value: int) -> datetime | None:
    return None if value == 0 else _stamp(value)


def _provider_type(value: int) -> str:
    known = BY_WIRE.get(value) if value else None
    if value and known is None:
        raise InvalidArgument("", "is not a known provider type")
    return known.name if known is not None else ""


def _status(value: int) -> int:
    if value and not 100 <= value <= 599:
        raise InvalidArgument("", "must be an HTTP status (100-599) or 0")
    return value


def _bounded(maximum: int) -> Any:
    def check(value: int) -> int:
        if not 0 <= value <= maximum:
            raise InvalidArgument("", f"must be between 0 and {maximum}")
        return value

    return check


def _range(size: int) -> str:
    return f"0-{size - 1}" if size else "there are none"


def _lengths(c: pb.InterceptionColumns, names: tuple[str, ...], n: int, of: str) -> None:
    for name in names:
        if len(getattr(c, name)) != n:
            raise InvalidArgument(f"columns.{name}", f"must have one value per {of} ({n})")


def _descriptions(c: pb.InterceptionColumns) -> list[Row]:
    """Each description of a columnar batch as the part of a row it gives, checked."""
    d = len(c.provider_name)
    if d > record_count(c, "columns"):  # the bridge writes one per distinct description
        raise InvalidArgument("columns.provider_name", "at most one description per record")
    _lengths(c, recording.DESCRIPTION_COLUMNS, d, "description (as columns.provider_name)")
    strings = c.strings
    size = len(strings)
    columns: dict[str, list[Any]] = {}
    for name, check in _TEXT_COLUMNS.items():
        f = f"columns.{name}"

        def one(index: int, f: str = f, check: Any = check) -> Any:
            if index >= size:
                raise InvalidArgument("", f"is not an index of columns.strings ({_range(size)})")
            return check(f, strings[index])

        columns[name] = _distinct(f, getattr(c, name), one)
    columns["provider_type"] = _distinct("columns.provider_type", c.provider_type, _provider_type)
    columns["credential_kind"] = _distinct(
        "columns.credential_kind",
        c.credential_kind,
        lambda v: _enum("", v, CREDENTIALS, required=False),
    )
    columns["proxied"] = list(c.proxied)
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def record_count(c: pb.InterceptionColumns, field: str) -> int:
    """How many records a columnar batch holds: its ids, one by one or as one text."""
    if not c.id_text:
        return len(c.id)
    if c.id:
        raise InvalidArgument(f"{field}.id_text", "the ids are given twice (and as id)")
    if len(c.id_text) % ID_LENGTH:
        raise InvalidArgument(f"{field}.id_text", f"must be {ID_LENGTH} characters per record")
    return len(c.id_text) // ID_LENGTH


def _column(c: pb.InterceptionColumns, name: str) -> Any:
    """A per-record column, from its field or from its fixed-width one (never both)."""
    values = getattr(c, name)
    if name in FIXED_COLUMNS:
        fixed = getattr(c, name + "_fixed")
        if len(fixed):
            if len(values):
                raise InvalidArgument(f"columns.{name}", f"is given twice (and as {name}_fixed)")
            return fixed
    return values


def _ids(c: pb.InterceptionColumns) -> list[str]:
    """The record ids, one by one or from one text."""
    if not c.id_text:
        return list(c.id)
    try:
        return ids_from_text(c.id_text)
    except ValueError:
        raise InvalidArgument("columns.id_text", "must be ASCII record ids") from None


def column_rows(
    c: pb.InterceptionColumns, field: str = "columns"
) -> tuple[list[Row], dict[int, list[Row]]]:
    """The records of a columnar batch as table rows and tool-call rows (by record
    index); InvalidArgument naming a bad value (`columns.route[3]`, or in `field`). Each
    description, and each distinct enum, count and time, is checked once: a batch costs
    about one row dict per record. Every per-record column is read from its field or its
    fixed-width one, whichever holds values."""
    try:
        return _column_rows(c)
    except InvalidArgument as exc:
        if field == "columns":
            raise
        raise InvalidArgument(field + exc.field.removeprefix("columns"), exc.detail) from None


def _column_rows(c: pb.InterceptionColumns) -> tuple[list[Row], dict[int, list[Row]]]:
    n = record_count(c, "columns")
    for name in recording.RECORD_COLUMNS:
        if name != "id" and len(_column(c, name)) != n:
            raise InvalidArgument(
                f"columns.{name}", f"must have one value per record (as columns.id) ({n})"
            )
    descriptions = _descriptions(c)
    d = len(descriptions)
    for i, index in enumerate(c.description):
        if index >= d:
            raise InvalidArgument(
                f"columns.description[{i}]", f"is not an index of the descriptions ({_range(d)})"
            )
    ids = [
        check_uuid(f"columns.id[{i}]", v, "a UUID (UUIDv7) record id")
        for i, v in enumerate(_ids(c))
    ]
    started = _distinct("columns.started_at", _column(c, "started_at"), _stamp)
    ended = _distinct("columns.ended_at", _column(c, "ended_at"), _stamp)
    firsts = _distinct("columns.first_byte_at", _column(c, "first_byte_at"), _first_byte)
    for i, (s, f, e) in enumerate(zip(started, firsts, ended, strict=True)):
        if e < s or (f is not None and not s <= f <= e):
            raise InvalidArgument(
                f"columns.ended_at[{i}]", "times must be started <= first byte <= ended"
            )
    columns: dict[str, list[Any]] = {
        "id": ids,
        "started_at": started,
        "first_byte_at": firsts,
        "ended_at": ended,
        "outcome": _distinct(
            "columns.outcome", c.outcome, lambda v: _enum("", v, OUTCOMES, required=True)
        ),
        "status_code": _distinct("columns.status_code", _column(c, "status_code"), _status),
        "attempts": _distinct("columns.attempts", c.attempts, _bounded(MAX_ATTEMPTS)),
        "streamed": list(c.streamed),
    }
    for kind in TOKEN_KINDS:
        columns[kind] = _distinct(f"columns.{kind}", _column(c, kind), _bounded(MAX_TOKEN_COUNT))
    if len(c.prompt_record) != len(c.prompt):
        raise InvalidArgument("columns.prompt", "must have one value per prompt_record")
    prompts = [""] * n
    last = -1
    for j, (index, prompt) in enumerate(zip(c.prompt_record, c.prompt, strict=True)):
        if not last < index < n:
            raise InvalidArgument(f"columns.prompt_record[{j}]", "must be ascending record indexes")
        last = index
        prompts[index] = _content(f"columns.prompt[{j}]", prompt, recording.MAX_PROMPT)
    columns["prompt"] = prompts
    calls, counts = _column_calls(c, ids)
    columns["tool_call_count"] = counts
    names = list(columns)
    rows = [
        {**descriptions[index], **dict(zip(names, values, strict=True))}
        for index, *values in zip(c.description, *columns.values(), strict=True)
    ]
    return rows, calls


def _column_calls(
    c: pb.InterceptionColumns, ids: list[str]
) -> tuple[dict[int, list[Row]], list[int]]:
    """The tool-call rows of a columnar batch by record index, and each record's count."""
    n = len(ids)
    side = (c.tool_call_name, c.tool_call_id, c.tool_call_arguments)
    if any(len(col) != len(c.tool_call_record) for col in side):
        raise InvalidArgument("columns.tool_call_name", "must have one value per tool_call_record")
    counts = [0] * n
    calls: dict[int, list[Row]] = {}
    last = 0
    for j, (index, name, call_id, arguments) in enumerate(
        zip(c.tool_call_record, *side, strict=True)
    ):
        f = f"columns.tool_call_record[{j}]"
        if not last <= index < n:
            raise InvalidArgument(f, "must be ascending record indexes")
        last = index
        position = counts[index]
        if position >= recording.MAX_TOOL_CALLS:
            raise InvalidArgument(f, f"at most {recording.MAX_TOOL_CALLS} tool calls per record")
        counts[index] = position + 1
        calls.setdefault(index, []).append(
            {
                "interception_id": ids[index],
                "position": position,
                "name": check_text(f"columns.tool_call_name[{j}]", name, recording.MAX_NAME),
                "call_id": check_text(f"columns.tool_call_id[{j}]", call_id, recording.MAX_NAME),
                "arguments": _content(
                    f"columns.tool_call_arguments[{j}]", arguments, recording.MAX_ARGUMENTS
                ),
            }
        )
    return calls, counts


def usage_filter(f: pb.InterceptionFilter) -> usage.UsageFilter:
    return usage.UsageFilter(
        start=_time("filter.start_time", f, "start_time", required=False),
        end=_time("filter.end_time", f, "end_time", required=False),
        principal_id=check_text("filter.principal_id", f.principal_id, 36),
        provider_name=check_text("filter.provider_name", f.provider_name, recording.MAX_NAME),
        model=check_text("filter.model", f.model, recording.MAX_NAME),
        client=_client("filter.client", f.client),
        outcome=_enum("filter.outcome", f.outcome, OUTCOMES, required=False),
    )


def group_by(values: Any) -> list[str]:
    names = [_enum("group_by", v, DIMENSIONS, required=True) for v in values]
    if len(set(names)) != len(names):
        raise InvalidArgument("group_by", "each dimension at most once")
    return names


# ------------------------------------------------------------------------------ answers


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _wire_type(name: str) -> provider_pb2.ProviderType.ValueType:
    known = TYPES.get(name)
    return known.wire if known is not None else provider_pb2.PROVIDER_TYPE_UNSPECIFIED


def interception_proto(row: Row, calls: list[Row] | None = None) -> usage_pb2.Interception:
    proto = usage_pb2.Interception(
        id=row["id"],
        started_at=_ts(row["started_at"]),
        ended_at=_ts(row["ended_at"]),
        provider_name=row["provider_name"],
        provider_type=_wire_type(row["provider_type"]),
        route=row["route"],
        requested_model=row["requested_model"],
        served_model=row["served_model"],
        outcome=OUTCOMES_FROM[row["outcome"]],  # type: ignore[arg-type]
        status_code=row["status_code"],
        principal_id=row["principal_id"],
        principal_name=row["principal_name"],
        token_id=row["token_id"],
        client=row["client"],
        user_agent=row["user_agent"],
        session_id=row["session_id"],
        credential_kind=CREDENTIALS_FROM.get(row["credential_kind"], 0),  # type: ignore[arg-type]
        credential_hint=row["credential_hint"],
        attempts=row["attempts"],
        usage=usage_pb2.TokenUsage(**{kind: row[kind] for kind in TOKEN_KINDS}),
        prompt=row["prompt"],
        proxied=row["proxied"],
        streamed=row["streamed"],
        tool_call_count=row["tool_call_count"],
    )
    if row["first_byte_at"] is not None:
        proto.first_byte_at.CopyFrom(_ts(row["first_byte_at"]))
    for call in calls or ():
        proto.tool_calls.add(
            name=call["name"], call_id=call["call_id"], arguments=call["arguments"]
        )
    return proto


def counts_proto(row: Row) -> pb.UsageCounts:
    return pb.UsageCounts(
        requests=row["requests"],
        failures=row["failures"],
        cancelled=row["cancelled"],
        usage=usage_pb2.TokenUsage(**{kind: int(row[kind]) for kind in TOKEN_KINDS}),
    )


def group_proto(row: Row) -> pb.UsageGroup:
    group = pb.UsageGroup(
        principal_id=row.get("principal", ""),
        principal_name=row.get("principal_name", ""),
        provider_name=row.get("provider", ""),
        model=row.get("model", ""),
        client=row.get("client", ""),
        counts=counts_proto(row),
    )
    period = row.get("day") or row.get("hour")
    if period is not None:
        group.period_start.CopyFrom(_ts(period))
    return group


class UsageServicer(pb_grpc.UsageServiceServicer):
    def __init__(self, db: Database, auth: Authenticator, metrics: ConfigMetrics) -> None:
        self._db = db
        self._auth = auth
        self._inserted = metrics.usage_records.labels(result="inserted")
        self._duplicates = metrics.usage_records.labels(result="duplicate")

    @unary(Action.WRITE_USAGE)
    async def RecordInterceptions(
        self, request: pb.RecordInterceptionsRequest, subject: Subject
    ) -> pb.RecordInterceptionsResponse:
        rows, calls, repeats = batch_rows(request)
        stored = await self._db.call(usage.record, self._db, subject, rows, calls)
        duplicates = stored.duplicates + repeats
        self._inserted.inc(stored.inserted)
        self._duplicates.inc(duplicates)
        return pb.RecordInterceptionsResponse(
            inserted=stored.inserted, duplicates=duplicates, reads_fixed_columns=True
        )

    @unary()
    async def ListInterceptions(
        self, request: pb.ListInterceptionsRequest, subject: Subject
    ) -> pb.ListInterceptionsResponse:
        size = request.page_size or DEFAULT_PAGE_SIZE
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"must be between 1 and {MAX_PAGE_SIZE}")
        flt = usage_filter(request.filter)
        after = usage.Cursor.decode(request.page_token) if request.page_token else None
        rows = await self._db.call(
            usage.list_interceptions, self._db, subject, flt, size + 1, after
        )
        response = pb.ListInterceptionsResponse(
            interceptions=[interception_proto(r) for r in rows[:size]]
        )
        if len(rows) > size:
            last = rows[size - 1]
            response.next_page_token = usage.Cursor(last["started_at"], last["id"]).encode()
        return response

    @unary()
    async def GetInterception(
        self, request: pb.GetInterceptionRequest, subject: Subject
    ) -> pb.GetInterceptionResponse:
        record_id = check_uuid("id", request.id, "a record id (UUID)")
        row, calls = await self._db.call(usage.get_interception, self._db, subject, record_id)
        return pb.GetInterceptionResponse(interception=interception_proto(row, calls))

    @unary()
    async def SummarizeUsage(
        self, request: pb.SummarizeUsageRequest, subject: Subject
    ) -> pb.SummarizeUsageResponse:
        flt = usage_filter(request.filter)
        dimensions = group_by(request.group_by)
        groups, total = await self._db.call(usage.summarize, self._db, subject, flt, dimensions)
        return pb.SummarizeUsageResponse(
            groups=[group_proto(g) for g in groups], total=counts_proto(total)
        )
