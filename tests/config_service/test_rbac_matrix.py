"""Every RPC x every role, against DESIGN §4's table (written out here, not read from rbac.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import config_service_pb2_grpc as cs_grpc
from aibridge.config.v1 import provider_admin_service_pb2 as pa
from aibridge.config.v1 import provider_admin_service_pb2_grpc as pa_grpc
from aibridge.config.v1 import provider_pb2, token_pb2, usage_pb2
from aibridge.config.v1 import token_admin_service_pb2 as ta
from aibridge.config.v1 import token_admin_service_pb2_grpc as ta_grpc
from aibridge.config.v1 import usage_service_pb2 as us
from aibridge.config.v1 import usage_service_pb2_grpc as us_grpc
from aibridge.masking import sha256_hex
from aibridge.recording import new_record_id
from config_service.rbac import Role
from config_service.server import SERVICE_NAMES
from config_service.store import tokens
from tests.fixtures.services import Service, StartService

O, A, M, B, P = Role.OWNER, Role.AUDITOR, Role.MEMBER, Role.BRIDGE, Role.PROXY  # noqa: E741 - the table reads better with initials
READ = {O, A, B, P}
WRITE = {O}
USAGE_READ = {O, A, M}  # DESIGN §11: members read their own

Call = Callable[[grpc.aio.Channel, Any], Awaitable[Any]]


async def watch(channel: grpc.aio.Channel, md: Any) -> Any:
    call = cs_grpc.ConfigServiceStub(channel).WatchProviders(
        cs.WatchProvidersRequest(node_id="rbac"), metadata=md
    )
    response = await call.read()
    call.cancel()
    return response


def unary(stub: Callable[[grpc.aio.Channel], Any], rpc: str, request: Message) -> Call:
    """A call of `rpc` ("CreateToken bridge": the CreateToken method) with `request`."""
    return lambda ch, md: getattr(stub(ch), rpc.split()[0])(request, metadata=md)


CONFIG, PROVIDERS = cs_grpc.ConfigServiceStub, pa_grpc.ProviderAdminServiceStub
TOKENS, USAGE = ta_grpc.TokenAdminServiceStub, us_grpc.UsageServiceStub
NO_ID = "00000000-0000-0000-0000-000000000000"
# (rpc, its stub, a request, the roles DESIGN §4 allows)
ROWS: list[tuple[str, Callable[[grpc.aio.Channel], Any], Message, set[Role]]] = [
    ("GetProviderSnapshot", CONFIG, cs.GetProviderSnapshotRequest(), READ),
    (
        "ReportStatus",
        CONFIG,
        cs.ReportStatusRequest(node_id="rbac", version="1", applied=True),
        {B, P},
    ),
    ("ListSubscribers", CONFIG, cs.ListSubscribersRequest(), {O, A}),
    ("ListProviders", PROVIDERS, pa.ListProvidersRequest(), READ),
    ("GetProvider", PROVIDERS, pa.GetProviderRequest(id_or_name="openai"), READ),
    (
        "CreateProvider",
        PROVIDERS,
        pa.CreateProviderRequest(
            name="made-by-rbac",
            type=provider_pb2.PROVIDER_TYPE_OPENAI,
            keys=["sk-rbac-0123456789abcdef"],
        ),
        WRITE,
    ),
    (
        "UpdateProvider",
        PROVIDERS,
        pa.UpdateProviderRequest(
            id_or_name="openai",
            display_name="OpenAI",
            update_mask=FieldMask(paths=["display_name"]),
        ),
        WRITE,
    ),
    ("DeleteProvider", PROVIDERS, pa.DeleteProviderRequest(id_or_name="no-such-provider"), WRITE),
    (
        "AddProviderKey",
        PROVIDERS,
        pa.AddProviderKeyRequest(id_or_name="openai", secret="sk-rbac-added-0123456789"),
        WRITE,
    ),
    (
        "DeleteProviderKey",
        PROVIDERS,
        pa.DeleteProviderKeyRequest(id_or_name="openai", key_id=NO_ID),
        WRITE,
    ),
    (
        "CreateToken",
        TOKENS,
        ta.CreateTokenRequest(principal_name="rbac-made", role=token_pb2.ROLE_MEMBER),
        {O},
    ),
    # Daemon tokens read every plaintext key or follow every change: no caller mints them.
    (
        "CreateToken bridge",
        TOKENS,
        ta.CreateTokenRequest(principal_name="rbac-bridge", role=token_pb2.ROLE_BRIDGE),
        set(),
    ),
    (
        "CreateToken proxy",
        TOKENS,
        ta.CreateTokenRequest(principal_name="rbac-proxy", role=token_pb2.ROLE_PROXY),
        set(),
    ),
    ("ListTokens", TOKENS, ta.ListTokensRequest(), {O}),
    ("RevokeToken", TOKENS, ta.RevokeTokenRequest(id=NO_ID), {O}),
    # The console's sign-in: any valid token learns its own principal and role.
    ("WhoAmI", TOKENS, ta.WhoAmIRequest(), {O, A, M, B, P}),
    ("RecordInterceptions", USAGE, us.RecordInterceptionsRequest(), {B}),
    ("ListInterceptions", USAGE, us.ListInterceptionsRequest(), USAGE_READ),
    (
        "GetInterception",
        USAGE,
        us.GetInterceptionRequest(id="00000000-0000-7000-8000-000000000000"),
        USAGE_READ,
    ),
    (
        "SummarizeUsage",
        USAGE,
        us.SummarizeUsageRequest(group_by=[us.USAGE_DIMENSION_PRINCIPAL]),
        USAGE_READ,
    ),
]
# rpc name -> (call, roles allowed by DESIGN §4)
MATRIX: dict[str, tuple[Call, set[Role]]] = {
    "WatchProviders": (watch, {O, A, B, P}),
    **{rpc: (unary(stub, rpc, request), roles) for rpc, stub, request, roles in ROWS},
}
CALLERS: list[Role | None] = [O, A, M, B, P, None]


def test_the_matrix_names_every_rpc_of_every_service() -> None:
    """Each RPC the server exposes has a row (variants like "CreateToken bridge" aside)."""
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    served = {m.name for name in SERVICE_NAMES for m in pool.FindServiceByName(name).methods}
    assert served == {rpc.split()[0] for rpc in MATRIX}


@pytest.fixture
async def svc(start_service: StartService) -> Service:
    return await start_service(AIBRIDGE_OPENAI_KEY="sk-rbac-openai-0123456789abcdef")


@pytest.mark.parametrize("rpc", sorted(MATRIX))
async def test_every_role_gets_the_documented_answer(svc: Service, rpc: str) -> None:
    """Allowed roles pass authorization, other roles get PERMISSION_DENIED, no token gets UNAUTHENTICATED."""
    call, allowed = MATRIX[rpc]
    outcomes: dict[str, str] = {}
    for caller in CALLERS:
        md = svc.md_for(caller) if caller is not None else ()
        try:
            await call(svc.channel(), md)
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        outcomes[caller.value if caller else "none"] = code.name
        if caller is None:
            assert code is grpc.StatusCode.UNAUTHENTICATED, outcomes
        elif caller in allowed:
            assert code not in (
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.INTERNAL,
                grpc.StatusCode.UNKNOWN,
            ), outcomes
        else:
            assert code is grpc.StatusCode.PERMISSION_DENIED, outcomes


# What of the interception records each role reads (DESIGN §11), written out: all records,
# only its own, and prompts and tool arguments.
READS_ALL = {O, A}
READS_OWN = {O, A, M}
READS_CONTENT = {O, A}


async def test_every_role_reads_the_documented_part_of_the_records(svc: Service) -> None:
    """Owner and auditor read every record with content; a member its own, content blanked."""
    db = svc.running.db

    def principal(role: Role) -> str:
        subject = tokens.lookup(db, sha256_hex(svc.tokens[role]))
        assert subject is not None
        return subject.principal_id

    stub = us_grpc.UsageServiceStub(svc.channel())
    records = {}
    for role in (O, A, M):
        record = usage_pb2.Interception(
            id=new_record_id(),
            principal_id=principal(role),
            outcome=usage_pb2.OUTCOME_COMPLETED,
            prompt=f"prompt of {role.value}",
            tool_calls=[usage_pb2.ToolCall(name="t", call_id="c", arguments="{}")],
        )
        record.started_at.GetCurrentTime()
        record.ended_at.CopyFrom(record.started_at)
        records[role] = record
    await stub.RecordInterceptions(
        us.RecordInterceptionsRequest(interceptions=list(records.values())),
        metadata=svc.md_for(B),
    )
    for caller in (O, A, M):
        md = svc.md_for(caller)
        listed = await stub.ListInterceptions(us.ListInterceptionsRequest(), metadata=md)
        visible = {i.principal_id for i in listed.interceptions}
        expected = {principal(r) for r in records if caller in READS_ALL or r is caller}
        assert visible == expected, caller
        assert caller in READS_OWN
        own = await stub.GetInterception(
            us.GetInterceptionRequest(id=records[caller].id), metadata=md
        )
        content = own.interception.prompt, own.interception.tool_calls[0].arguments
        if caller in READS_CONTENT:
            assert content == (f"prompt of {caller.value}", "{}"), caller
        else:
            assert content == ("", ""), caller


async def test_whoami_names_the_callers_own_principal_and_role(svc: Service) -> None:
    """WhoAmI answers each role with its own principal, role and token id, and nothing for a revoked token."""
    stub = ta_grpc.TokenAdminServiceStub(svc.channel())
    wire = {O: token_pb2.ROLE_OWNER, A: token_pb2.ROLE_AUDITOR, M: token_pb2.ROLE_MEMBER}
    wire |= {B: token_pb2.ROLE_BRIDGE, P: token_pb2.ROLE_PROXY}
    for role, expected in wire.items():
        subject = tokens.lookup(svc.running.db, sha256_hex(svc.tokens[role]))
        assert subject is not None
        me = await stub.WhoAmI(ta.WhoAmIRequest(), metadata=svc.md_for(role))
        assert (me.principal_id, me.principal_name, me.role, me.token_id) == (
            subject.principal_id,
            subject.name,
            expected,
            subject.token_id,
        )
    made = await stub.CreateToken(
        ta.CreateTokenRequest(principal_name="short-lived", role=token_pb2.ROLE_MEMBER),
        metadata=svc.md_for(O),
    )
    await stub.RevokeToken(ta.RevokeTokenRequest(id=made.token.id), metadata=svc.md_for(O))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.WhoAmI(ta.WhoAmIRequest(), metadata=svc.md(made.secret))
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
