"""UsageService against a real config service on SQLite and PostgreSQL: idempotent batches,
pagination, filters, summaries, member isolation, content blanking, secrets, retention."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import func, select, text

from aibridge import recording
from aibridge.config.v1 import usage_pb2
from aibridge.config.v1 import usage_service_pb2 as pb
from aibridge.config.v1 import usage_service_pb2_grpc as pb_grpc
from aibridge.envconfig import SettingsError
from aibridge.masking import sha256_hex
from aibridge.recording import TOKEN_KINDS, new_record_id
from config_service.db.models import Interception, InterceptionToolCall
from config_service.rbac import Role
from config_service.servicers.usage import batch_rows
from config_service.settings import ConfigServiceSettings
from config_service.store import tokens, usage
from data_plane.recording.batch import Batch, columns, message_values
from tests.fixtures.services import Service, StartService
from tests.fixtures.waits import eventually

NOW = datetime.now(UTC).replace(microsecond=0)
FULL_KEY = "sk-proj-usage-FULLKEY-0123456789abcdefghijklmnop"


def ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def make(
    principal_id: str,
    started: datetime = NOW,
    *,
    model: str = "gpt-4o",
    provider: str = "openai",
    client: str = "codex",
    outcome: int = usage_pb2.OUTCOME_COMPLETED,
    tokens_in: int = 10,
    tokens_out: int = 5,
    **extra: Any,
) -> usage_pb2.Interception:
    fields: dict[str, Any] = dict(
        id=new_record_id(int(started.timestamp() * 1e9)),
        started_at=ts(started),
        ended_at=ts(started + timedelta(milliseconds=250)),
        provider_name=provider,
        route="/v1/chat/completions",
        requested_model=model,
        served_model=model + "-2024",
        outcome=outcome,  # type: ignore[arg-type]
        status_code=200 if outcome == usage_pb2.OUTCOME_COMPLETED else 502,
        principal_id=principal_id,
        principal_name=f"name-of-{principal_id[:8]}",
        client=client,
        user_agent="codex_cli_rs/0.1",
        credential_kind=usage_pb2.CREDENTIAL_KIND_POOLED,
        credential_hint="sk-p...mnop",
        attempts=1,
        usage=usage_pb2.TokenUsage(
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cache_read_tokens=3,
            cache_write_tokens=2,
            reasoning_tokens=1,
        ),
    )
    return usage_pb2.Interception(**(fields | extra))


class Usage:
    """A UsageService client per role of the service."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.stub = pb_grpc.UsageServiceStub(svc.channel())
        self.member_id = self._principal(Role.MEMBER)
        self.auditor_id = self._principal(Role.AUDITOR)

    def _principal(self, role: Role) -> str:
        subject = tokens.lookup(self.svc.running.db, sha256_hex(self.svc.tokens[role]))
        assert subject is not None
        return subject.principal_id

    async def record(
        self, records: Sequence[usage_pb2.Interception]
    ) -> pb.RecordInterceptionsResponse:
        return await self.send(pb.RecordInterceptionsRequest(interceptions=records))

    async def send(self, request: pb.RecordInterceptionsRequest) -> pb.RecordInterceptionsResponse:
        return await self.stub.RecordInterceptions(request, metadata=self.svc.md_for(Role.BRIDGE))

    async def list_all(
        self, role: Role = Role.OWNER, page_size: int = 100, **filters: Any
    ) -> list[usage_pb2.Interception]:
        found: list[usage_pb2.Interception] = []
        token = ""
        while True:
            page = await self.stub.ListInterceptions(
                pb.ListInterceptionsRequest(
                    filter=pb.InterceptionFilter(**filters), page_size=page_size, page_token=token
                ),
                metadata=self.svc.md_for(role),
            )
            found.extend(page.interceptions)
            token = page.next_page_token
            if not token:
                return found

    async def get(self, record_id: str, role: Role = Role.OWNER) -> usage_pb2.Interception:
        answer = await self.stub.GetInterception(
            pb.GetInterceptionRequest(id=record_id), metadata=self.svc.md_for(role)
        )
        return answer.interception

    async def summary(
        self, group_by: Sequence[int], role: Role = Role.OWNER, **filters: Any
    ) -> pb.SummarizeUsageResponse:
        return await self.stub.SummarizeUsage(
            pb.SummarizeUsageRequest(filter=pb.InterceptionFilter(**filters), group_by=group_by),  # type: ignore[arg-type]
            metadata=self.svc.md_for(role),
        )


@pytest.fixture
async def u(service: Service) -> Usage:
    return Usage(service)


def count_rows(svc: Service, model: type[Any]) -> int:
    with svc.running.db.read() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


async def test_a_replayed_batch_inserts_nothing_and_answers_ok(u: Usage) -> None:
    """The same batch twice: the second call inserts nothing new, counts duplicates, answers OK."""
    call = usage_pb2.ToolCall(name="shell", call_id="call_1", arguments='{"cmd": "ls"}')
    batch = [make(u.member_id, tool_calls=[call]) for _ in range(20)]
    first = await u.record(batch)
    assert (first.inserted, first.duplicates) == (20, 0)
    again = await u.record(batch)
    assert (again.inserted, again.duplicates) == (0, 20)
    partly = await u.record([*batch[:5], make(u.member_id)])
    assert (partly.inserted, partly.duplicates) == (1, 5)
    assert count_rows(u.svc, Interception) == 21
    assert count_rows(u.svc, InterceptionToolCall) == 20
    registry = u.svc.running.metrics.registry
    for result, count in (("inserted", 21), ("duplicate", 25)):
        sample = registry.get_sample_value(
            "aibridge_config_usage_records_total", {"result": result}
        )
        assert sample == count, result


async def test_the_same_batch_sent_concurrently_is_stored_once(u: Usage) -> None:
    """Four concurrent copies of one batch (a retry racing the original) store each record once."""
    call = usage_pb2.ToolCall(name="shell", call_id="call_1")
    batch = [make(u.member_id, tool_calls=[call]) for _ in range(200)]
    answers = await asyncio.gather(*(u.record(batch) for _ in range(4)))
    assert sum(a.inserted for a in answers) == 200
    assert sum(a.duplicates for a in answers) == 3 * 200
    assert count_rows(u.svc, Interception) == 200
    assert count_rows(u.svc, InterceptionToolCall) == 200


async def test_a_record_repeated_within_a_batch_is_stored_once(u: Usage) -> None:
    """A batch carrying one record twice stores it once and counts the repeat as a duplicate."""
    record = make(u.member_id, tool_calls=[usage_pb2.ToolCall(name="t", call_id="c")])
    answer = await u.record([record, record])
    assert (answer.inserted, answer.duplicates) == (1, 1)
    assert count_rows(u.svc, InterceptionToolCall) == 1


async def test_pages_are_newest_first_and_stable_while_records_arrive(u: Usage) -> None:
    """Paging through sees every record once, newest first, even as newer records are written."""
    # Several records share a start time: the id breaks the tie.
    batch = [make(u.member_id, NOW - timedelta(seconds=i // 3)) for i in range(95)]
    await u.record(batch)
    seen: list[usage_pb2.Interception] = []
    token = ""
    while True:
        page = await u.stub.ListInterceptions(
            pb.ListInterceptionsRequest(page_size=10, page_token=token),
            metadata=u.svc.md_for(Role.OWNER),
        )
        seen.extend(page.interceptions)
        await u.record([make(u.member_id, NOW + timedelta(minutes=1))])  # lands on page one
        token = page.next_page_token
        if not token:
            break
    assert sorted(i.id for i in seen) == sorted(r.id for r in batch)
    order = [(i.started_at.ToDatetime(), i.id) for i in seen]
    assert order == sorted(order, reverse=True)


async def test_each_filter_selects_only_its_records(u: Usage) -> None:
    """Time range, principal, provider, model (requested or served), client and outcome filter."""
    old = make(u.member_id, NOW - timedelta(days=3))
    other = make(u.auditor_id, provider="anthropic", model="claude-sonnet", client="claude-code")
    failed = make(u.member_id, outcome=usage_pb2.OUTCOME_UPSTREAM_ERROR)
    plain = make(u.member_id)
    await u.record([old, other, failed, plain])

    async def ids(**filters: Any) -> set[str]:
        return {i.id for i in await u.list_all(**filters)}

    assert await ids(start_time=ts(NOW - timedelta(days=1))) == {other.id, failed.id, plain.id}
    assert await ids(end_time=ts(NOW - timedelta(days=1))) == {old.id}
    assert await ids(principal_id=u.auditor_id) == {other.id}
    assert await ids(provider_name="anthropic") == {other.id}
    assert await ids(model="claude-sonnet") == {other.id}
    assert await ids(model="claude-sonnet-2024") == {other.id}
    assert await ids(client="claude-code") == {other.id}
    assert await ids(outcome=usage_pb2.OUTCOME_UPSTREAM_ERROR) == {failed.id}


async def test_the_summary_groups_add_up_to_the_total(u: Usage) -> None:
    """Grouped by principal and model (and by day/hour), the groups sum to the total."""
    records = [
        make(u.member_id, model="gpt-4o", tokens_in=100, tokens_out=7),
        make(u.member_id, model="gpt-4o", outcome=usage_pb2.OUTCOME_REFUSED_POOL),
        make(u.member_id, model="o3", outcome=usage_pb2.OUTCOME_CANCELLED),
        make(u.auditor_id, NOW - timedelta(days=1, hours=2), model="o3", tokens_in=1),
    ]
    await u.record(records)
    both = await u.summary([pb.USAGE_DIMENSION_PRINCIPAL, pb.USAGE_DIMENSION_MODEL])
    total = both.total
    assert (total.requests, total.failures, total.cancelled) == (4, 1, 1)
    assert total.usage.input_tokens == 100 + 10 + 10 + 1
    assert total.usage.reasoning_tokens == 4
    cells = {(g.principal_id, g.model): g.counts for g in both.groups}
    assert set(cells) == {(u.member_id, "gpt-4o"), (u.member_id, "o3"), (u.auditor_id, "o3")}
    assert cells[u.member_id, "gpt-4o"].requests == 2
    assert cells[u.member_id, "gpt-4o"].failures == 1
    assert all(g.principal_name for g in both.groups)
    for kind in TOKEN_KINDS:
        assert sum(getattr(g.counts.usage, kind) for g in both.groups) == getattr(total.usage, kind)
    for period in (pb.USAGE_DIMENSION_DAY, pb.USAGE_DIMENSION_HOUR):
        grouped = await u.summary([period])
        assert sum(g.counts.requests for g in grouped.groups) == 4
        starts = [g.period_start.ToDatetime(tzinfo=UTC) for g in grouped.groups]
        assert starts == sorted(starts, reverse=True)
    days = await u.summary([pb.USAGE_DIMENSION_DAY])
    assert next(g.period_start.ToDatetime(tzinfo=UTC) for g in days.groups) == NOW.replace(
        hour=0, minute=0, second=0
    )


async def test_a_member_reads_only_its_own_records_without_content(u: Usage) -> None:
    """A member lists, gets and summarizes its own records only, with prompts and arguments blank."""
    call = usage_pb2.ToolCall(name="read_file", call_id="toolu_1", arguments='{"path": "/x"}')
    mine = make(u.member_id, prompt="my secret plan", tool_calls=[call])
    theirs = make(u.auditor_id, prompt="their plan")
    await u.record([mine, theirs])
    listed = await u.list_all(Role.MEMBER)
    assert [i.id for i in listed] == [mine.id]
    assert {i.id for i in await u.list_all(Role.MEMBER, principal_id=u.auditor_id)} == set()
    got = await u.get(mine.id, Role.MEMBER)
    assert got.prompt == ""
    assert [(c.name, c.call_id, c.arguments) for c in got.tool_calls] == [
        ("read_file", "toolu_1", "")
    ]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await u.get(theirs.id, Role.MEMBER)
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    summary = await u.summary([pb.USAGE_DIMENSION_PRINCIPAL], Role.MEMBER)
    assert [g.principal_id for g in summary.groups] == [u.member_id]
    assert summary.total.requests == 1
    for role in (Role.OWNER, Role.AUDITOR):
        full = await u.get(mine.id, role)
        assert full.prompt == "my secret plan"
        assert full.tool_calls[0].arguments == '{"path": "/x"}'
        assert full.tool_call_count == 1


async def test_the_bridge_writes_but_reads_nothing(u: Usage) -> None:
    """The bridge token records; every read RPC answers it PERMISSION_DENIED."""
    record = make(u.member_id)
    await u.record([record])
    for call in (
        u.list_all(Role.BRIDGE),
        u.get(record.id, Role.BRIDGE),
        u.summary([], Role.BRIDGE),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_a_full_key_in_the_hint_is_masked_before_it_is_stored(u: Usage) -> None:
    """A credential hint carrying a whole key is stored (and answered) masked, never in full."""
    record = make(u.member_id, credential_hint=FULL_KEY)
    await u.record([record])
    assert (await u.get(record.id)).credential_hint == "sk-p...mnop"
    with u.svc.running.db.read() as session:
        dump = str(session.execute(text("SELECT * FROM interceptions")).all())
    assert FULL_KEY not in dump
    assert "FULLKEY" not in dump


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("interceptions[1].id", {"id": "not-a-uuid"}),
        ("interceptions[1].prompt", {"prompt": "a\x00b"}),
        ("interceptions[1].route", {"route": "/v1/\x1b[31m"}),
        ("interceptions[1].requested_model", {"requested_model": "m" * 201}),
        ("interceptions[1].client", {"client": "Claude Code"}),
        ("interceptions[1].usage.input_tokens", {"usage": usage_pb2.TokenUsage(input_tokens=-1)}),
        ("interceptions[1].outcome", {"outcome": usage_pb2.OUTCOME_UNSPECIFIED}),
        ("interceptions[1].tool_calls[0].name", {"tool_calls": [usage_pb2.ToolCall(name="a\nb")]}),
        ("interceptions[1].status_code", {"status_code": 1000}),
    ],
)
async def test_a_bad_field_refuses_the_batch_naming_it(
    u: Usage, field: str, change: dict[str, Any]
) -> None:
    """One bad field anywhere refuses the whole batch with INVALID_ARGUMENT naming the field."""
    bad = make(u.member_id)
    for name, value in change.items():
        if isinstance(value, list):
            getattr(bad, name).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(bad, name).CopyFrom(value)
        else:
            setattr(bad, name, value)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await u.record([make(u.member_id), bad])
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith(field + ":"), refused.value.details()
    assert count_rows(u.svc, Interception) == 0


def as_columns(records: Sequence[usage_pb2.Interception]) -> pb.RecordInterceptionsRequest:
    """`records` as a bridge sends them to a service from before fixed_columns."""
    return pb.RecordInterceptionsRequest(columns=columns([message_values(r) for r in records]))


def as_fixed(records: Sequence[usage_pb2.Interception]) -> pb.RecordInterceptionsRequest:
    """`records` as the bridge sends them to a service that reads fixed_columns."""
    batch = Batch()
    batch.extend([message_values(r) for r in records])
    request = pb.RecordInterceptionsRequest.FromString(batch.encode(fixed=True))
    assert request.HasField("fixed_columns")
    return request


async def test_every_form_of_a_batch_stores_the_same_records(u: Usage) -> None:
    """The same records sent one by one, as columns and as fixed_columns (varying counts and statuses fixed-width) read back alike, and every answer says the service reads fixed_columns."""
    calls = [usage_pb2.ToolCall(name="f", call_id="c1", arguments="{}")]
    variants: list[dict[str, Any]] = [
        {"prompt": "hi", "tool_calls": calls, "first_byte_at": ts(NOW)},
        {
            "credential_hint": FULL_KEY,
            "status_code": 502,
            "outcome": usage_pb2.OUTCOME_UPSTREAM_ERROR,
        },
        {"usage": usage_pb2.TokenUsage(input_tokens=123_456, output_tokens=2**40)},
    ]
    forms = [u.record, lambda r: u.send(as_columns(r)), lambda r: u.send(as_fixed(r))]
    sent = [[make(u.member_id, **v) for v in variants] for _ in forms]
    for send, records in zip(forms, sent, strict=True):
        answer = await send(records)
        assert (answer.inserted, answer.duplicates, answer.reads_fixed_columns) == (3, 0, True)
    for one, *others in zip(*sent, strict=True):
        want = await u.get(one.id)
        for other in others:
            got = await u.get(other.id)
            got.id = want.id
            assert got == want


@pytest.mark.parametrize(
    ("field", "damage"),
    [
        ("fixed_columns.started_at", lambda c: c.started_at.extend(c.started_at_fixed)),
        ("fixed_columns.id_text", lambda c: setattr(c, "id_text", c.id_text[:-1])),
        ("fixed_columns.id_text", lambda c: c.id.append(new_record_id())),
        ("fixed_columns.input_tokens", lambda c: c.input_tokens_fixed.append(1)),
        ("fixed_columns.id[0]", lambda c: setattr(c, "id_text", b"x" * len(c.id_text))),
    ],
)
async def test_a_malformed_fixed_columns_batch_is_refused_naming_the_column(
    u: Usage, field: str, damage: Any
) -> None:
    """A column given twice (fixed-width and not), ids of the wrong length, given twice or not UUIDs, or a fixed-width column of the wrong length refuse the batch."""
    request = as_fixed([make(u.member_id, tokens_in=300), make(u.member_id, tokens_in=70_000)])
    damage(request.fixed_columns)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await u.send(request)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith(field + ":"), refused.value.details()
    assert count_rows(u.svc, Interception) == 0


async def test_a_columnar_batch_stores_what_the_same_records_one_by_one_store(u: Usage) -> None:
    """Records sent as columns read back exactly as the same records sent one by one, tool calls and prompt included."""
    calls = [usage_pb2.ToolCall(name="f", call_id="c1", arguments="{}")]
    pairs = [
        (
            make(u.member_id, prompt="hi", tool_calls=calls),
            make(u.member_id, prompt="hi", tool_calls=calls),
        ),
        (make(u.member_id, credential_hint=FULL_KEY), make(u.member_id, credential_hint=FULL_KEY)),
        (make(u.member_id, first_byte_at=ts(NOW)), make(u.member_id, first_byte_at=ts(NOW))),
    ]
    await u.record([a for a, _ in pairs])
    answer = await u.send(as_columns([b for _, b in pairs] + [pairs[0][1]]))
    assert (answer.inserted, answer.duplicates) == (3, 1)
    for a, b in pairs:
        got_a, got_b = await u.get(a.id), await u.get(b.id)
        got_b.id = got_a.id
        assert got_b == got_a


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("columns.id[1]", {"id": "not-a-uuid"}),
        ("columns.prompt[0]", {"prompt": "a\x00b"}),
        ("columns.route[1]", {"route": "/v1/\x1b[31m"}),
        ("columns.requested_model[1]", {"requested_model": "m" * 201}),
        ("columns.client[1]", {"client": "Claude Code"}),
        ("columns.outcome[1]", {"outcome": usage_pb2.OUTCOME_UNSPECIFIED}),
        ("columns.tool_call_name[0]", {"tool_calls": [usage_pb2.ToolCall(name="a\nb")]}),
        ("columns.status_code[1]", {"status_code": 1000}),
    ],
)
async def test_a_bad_column_value_refuses_the_batch_naming_it(
    u: Usage, field: str, change: dict[str, Any]
) -> None:
    """One bad value in a columnar batch refuses it whole with INVALID_ARGUMENT naming the column and record."""
    bad = make(u.member_id)
    for name, value in change.items():
        if isinstance(value, list):
            getattr(bad, name).extend(value)
        else:
            setattr(bad, name, value)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await u.send(as_columns([make(u.member_id), bad]))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith(field + ":"), refused.value.details()
    assert count_rows(u.svc, Interception) == 0


def more_descriptions_than_records(c: pb.InterceptionColumns, extra: int) -> None:
    """Descriptions no record uses: each costs a check and a row of the service's CPU."""
    for name in recording.DESCRIPTION_COLUMNS:
        column = getattr(c, name)
        column.extend([column[0]] * extra)


@pytest.mark.parametrize(
    ("field", "damage"),
    [
        ("columns.route", lambda c: c.route.append(0)),
        ("columns.route[0]", lambda c: c.route.__setitem__(0, 999)),
        ("columns.description[1]", lambda c: c.description.__setitem__(1, 5)),
        ("columns.started_at[1]", lambda c: c.started_at.__setitem__(1, 0)),
        (
            "columns.tool_call_record[0]",
            lambda c: (
                c.tool_call_record.append(7),
                c.tool_call_name.append("f"),
                c.tool_call_id.append(""),
                c.tool_call_arguments.append(""),
            ),
        ),
        ("columns.tool_call_name", lambda c: c.tool_call_record.append(0)),
        ("columns.provider_name", lambda c: more_descriptions_than_records(c, 1000)),
    ],
)
async def test_a_malformed_columnar_batch_is_refused_naming_the_column(
    u: Usage, field: str, damage: Any
) -> None:
    """Columns of unequal length, an index outside the string table or the descriptions, a missing time, a side column naming no record or more descriptions than records refuse the batch."""
    request = as_columns([make(u.member_id), make(u.member_id)])
    damage(request.columns)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await u.send(request)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith(field + ":"), refused.value.details()
    assert count_rows(u.svc, Interception) == 0


async def test_bad_read_arguments_answer_invalid_argument(u: Usage) -> None:
    """A page token not from the service, a bad page size or group-by answer INVALID_ARGUMENT."""
    md = u.svc.md_for(Role.OWNER)
    requests = [
        u.stub.ListInterceptions(pb.ListInterceptionsRequest(page_token="garbage!"), metadata=md),
        u.stub.ListInterceptions(pb.ListInterceptionsRequest(page_size=5000), metadata=md),
        u.stub.GetInterception(pb.GetInterceptionRequest(id="x\x00"), metadata=md),
        u.summary([pb.USAGE_DIMENSION_MODEL, pb.USAGE_DIMENSION_MODEL]),
        u.summary([pb.USAGE_DIMENSION_UNSPECIFIED]),
    ]
    for request in requests:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await request
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_records_past_the_retention_are_pruned_on_the_timer(
    start_service: StartService,
) -> None:
    """With a 1 h retention, a 2 h old record and its tool calls go; a fresh one stays."""
    svc = await start_service(AIBRIDGE_USAGE_RETENTION="1h", AIBRIDGE_USAGE_PRUNE_INTERVAL="100ms")
    u = Usage(svc)
    call = usage_pb2.ToolCall(name="t", call_id="c")
    old = make(u.member_id, datetime.now(UTC) - timedelta(hours=2), tool_calls=[call])
    fresh = make(u.member_id, datetime.now(UTC))
    await u.record([old, fresh])
    await eventually(lambda: count_rows(svc, Interception) == 1)
    assert [i.id for i in await u.list_all()] == [fresh.id]
    assert count_rows(svc, InterceptionToolCall) == 0
    assert svc.running.metrics.registry.get_sample_value("aibridge_config_usage_pruned_total") == 1


async def test_pruning_goes_in_batches_and_one_replica_at_a_time(service: Service) -> None:
    """prune deletes at most a batch per call; on PostgreSQL another holder of the lock stops it."""
    db = service.running.db
    bridge = tokens.lookup(db, sha256_hex(service.tokens[Role.BRIDGE]))
    assert bridge is not None
    old = NOW - timedelta(days=90)
    rows, calls, _ = batch_rows(
        pb.RecordInterceptionsRequest(interceptions=[make("p", old) for _ in range(25)])
    )
    await asyncio.to_thread(usage.record, db, bridge, rows, calls)
    assert usage.prune(db, NOW, 10) == 10
    if db.is_postgres:
        with db.engine.connect() as holder:
            holder.execute(text("SELECT pg_advisory_lock(:id)"), {"id": usage.PRUNE_LOCK_ID})
            assert usage.prune(db, NOW, 10) is None
            holder.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": usage.PRUNE_LOCK_ID})
    assert usage.prune(db, NOW, 10) == 10
    assert usage.prune(db, NOW, 10) == 5
    assert usage.prune(db, NOW, 10) == 0


def test_retention_takes_days_and_refuses_nonsense(tmp_path: Path) -> None:
    """AIBRIDGE_USAGE_RETENTION reads 7d as a week, defaults to 30 days, and names a bad value."""
    env = {"AIBRIDGE_DATA_DIR": str(tmp_path)}
    assert ConfigServiceSettings.from_env(env).usage_retention == 30 * 86400
    week = ConfigServiceSettings.from_env({**env, "AIBRIDGE_USAGE_RETENTION": "7d"})
    assert week.usage_retention == 7 * 86400
    with pytest.raises(SettingsError, match="AIBRIDGE_USAGE_RETENTION='a month'"):
        ConfigServiceSettings.from_env({**env, "AIBRIDGE_USAGE_RETENTION": "a month"})
