"""Input at the gRPC edge: every string field of ReportStatus and the token RPCs is
bounded and free of control characters before it reaches the database, NOT_FOUND never
echoes the caller's value, and a body that does not parse is INVALID_ARGUMENT for every
RPC on the server. Real in-process config service on a real socket; SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import config_service_pb2_grpc as cs_grpc
from aibridge.config.v1 import provider_admin_service_pb2 as pa
from aibridge.config.v1 import provider_admin_service_pb2_grpc as pa_grpc
from aibridge.config.v1 import provider_pb2, token_pb2
from aibridge.config.v1 import token_admin_service_pb2 as ta
from aibridge.config.v1 import token_admin_service_pb2_grpc as ta_grpc
from config_service.rbac import Role
from config_service.server import STATUS_FRESHNESS
from config_service.servicers.edge import MAX_OPEN_STREAMS
from config_service.store import subscriber_status
from tests.fixtures.services import Service
from tests.fixtures.waits import eventually

PASTED_SECRET = "sk-live-pasted-by-mistake-0123456789"  # a valid provider name, too


async def invalid(call: Any, field: str, value: str = "") -> str:
    """Await `call`; it must fail INVALID_ARGUMENT naming `field` without quoting `value`."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, error.details())
    details = error.details() or ""
    assert details.startswith(f"{field}: "), details
    if value:
        assert value not in details, details
    return details


# ------------------------------------------------------------------------------ ReportStatus

BAD_REPORTS = [
    ("version", {"version": "1" * 41}),
    ("version", {"version": "1\x00"}),
    ("version", {"version": "7\n"}),
    ("node_id", {"node_id": "n\x00"}),
    ("node_id", {"node_id": "n\nforged row"}),
    ("node_id", {"node_id": "n" * 201}),
    ("errors[0].provider_name", {"errors": [("\x1b[31mred", "m")]}),
    ("errors[0].provider_name", {"errors": [("p" * 201, "m")]}),
    ("errors[1].message", {"errors": [("a", "ok"), ("b", "nul \x00 here")]}),
    ("errors[0].message", {"errors": [("a", "\x1b]0;title\x07")]}),
    ("errors[0].message", {"errors": [("a", "m" * 2001)]}),
    ("error_detail", {"error_detail": "boom\x00"}),
    ("error_detail", {"error_detail": "clear \x1b[2J screen"}),
    ("error_detail", {"error_detail": "d" * 2001}),
    ("errors", {"errors": [("a", "m")] * 1001}),
]


def report(**fields: Any) -> cs.ReportStatusRequest:
    request = cs.ReportStatusRequest(node_id="edge-node", version="1", applied=False)
    for name, value in fields.items():
        if name == "errors":
            request.errors.extend(cs.ProviderError(provider_name=p, message=m) for p, m in value)
        else:
            setattr(request, name, value)
    return request


async def watching(service: Service, node_id: str) -> grpc.aio.UnaryStreamCall[Any, Any]:
    """An open WatchProviders stream of the bridge, registered under `node_id`."""
    call = cs_grpc.ConfigServiceStub(service.channel()).WatchProviders(
        cs.WatchProvidersRequest(node_id=node_id), metadata=service.md_for(Role.BRIDGE)
    )
    await asyncio.wait_for(call.read(), 10)
    return call


async def test_report_status_rejects_every_out_of_bounds_field(service: Service) -> None:
    """Each string field of ReportStatus beyond its length or with control characters is INVALID_ARGUMENT naming it."""
    stub = cs_grpc.ConfigServiceStub(service.channel())
    stream = await watching(service, "edge-node")
    for field, fields in BAD_REPORTS:
        await invalid(
            stub.ReportStatus(report(**fields), metadata=service.md_for(Role.BRIDGE)), field
        )
    # Nothing of the rejected reports was recorded.
    (state,) = service.running.registry.all()
    assert state.last_report_at is None and not state.errors and not state.error_detail
    stream.cancel()


async def test_report_status_keeps_multi_line_diagnostics(service: Service) -> None:
    """Newlines and tabs are allowed in error messages (they are diagnostics), within the bounds."""
    stub = cs_grpc.ConfigServiceStub(service.channel())
    stream = await watching(service, "edge-node")
    request = report(errors=[("alpha", "line one\n\tline two")], error_detail="a\nb")
    await stub.ReportStatus(request, metadata=service.md_for(Role.BRIDGE))
    (state,) = service.running.registry.all()
    assert state.errors[0].message == "line one\n\tline two"
    assert state.error_detail == "a\nb"
    stream.cancel()


async def test_rejected_reports_leave_the_cluster_status_publishable(service: Service) -> None:
    """After bad reports, this replica's subscriber status still publishes and reads back on every engine."""
    stub = cs_grpc.ConfigServiceStub(service.channel())
    stream = await watching(service, "edge-node")
    db = service.running.db
    registry = service.running.registry
    for _, fields in BAD_REPORTS:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await stub.ReportStatus(report(**fields), metadata=service.md_for(Role.BRIDGE))
        # What the replica's status loop does every second.
        await asyncio.to_thread(subscriber_status.publish, db, "replica-x", registry.all())
    good = report(version="1" * 40, errors=[("alpha", "cannot build\nsee log")])
    await stub.ReportStatus(good, metadata=service.md_for(Role.BRIDGE))
    await asyncio.to_thread(subscriber_status.publish, db, "replica-x", registry.all())
    seen = await asyncio.to_thread(
        subscriber_status.others, db, "another-replica", STATUS_FRESHNESS
    )
    (remote,) = [r for r in seen if r.replica_id == "replica-x"]
    assert remote.state.version_rejected == "1" * 40
    assert remote.state.errors[0].message == "cannot build\nsee log"
    stream.cancel()


async def test_a_long_report_is_kept_as_its_first_errors_and_their_count(
    service: Service,
) -> None:
    """A report of 1000 errors is listed, here and by the other replicas, as its first 20 errors with errors_total 1000."""
    stub = cs_grpc.ConfigServiceStub(service.channel())
    stream = await watching(service, "edge-node")
    many = report(errors=[(f"p{i}", "m") for i in range(1000)])
    await stub.ReportStatus(many, metadata=service.md_for(Role.BRIDGE))
    listed = await stub.ListSubscribers(
        cs.ListSubscribersRequest(), metadata=service.md_for(Role.OWNER)
    )
    (subscriber,) = listed.subscribers
    assert [e.provider_name for e in subscriber.errors] == [f"p{i}" for i in range(20)]
    assert subscriber.errors_total == 1000 and listed.subscribers_left_off == 0
    db = service.running.db
    await asyncio.to_thread(
        subscriber_status.publish, db, "replica-x", service.running.registry.all()
    )
    seen = await asyncio.to_thread(
        subscriber_status.others, db, "another-replica", STATUS_FRESHNESS
    )
    (remote,) = [r.state for r in seen if r.replica_id == "replica-x"]
    assert len(remote.errors) == 20 and remote.errors_total == 1000
    stream.cancel()


async def test_list_subscribers_leaves_off_streams_beyond_its_byte_budget(
    service: Service,
) -> None:
    """Twenty-four streams each reporting the largest kept report (4-byte characters) are answered within 4 MiB, the ones left off counted."""
    stub = cs_grpc.ConfigServiceStub(service.channel())
    streams = [await watching(service, f"edge-{i}") for i in range(24)]
    wide = "\U0001f600" * 2000  # 8000 bytes in UTF-8
    for i in range(24):
        big = report(node_id=f"edge-{i}", errors=[(f"p{j}", wide) for j in range(20)])
        big.error_detail = wide
        await stub.ReportStatus(big, metadata=service.md_for(Role.BRIDGE))
    listed = await stub.ListSubscribers(
        cs.ListSubscribersRequest(), metadata=service.md_for(Role.OWNER)
    )
    assert listed.ByteSize() < 4 * 2**20
    assert listed.subscribers_left_off > 0
    assert len(listed.subscribers) + listed.subscribers_left_off == 24
    for stream in streams:
        stream.cancel()


# ------------------------------------------------------------------------------ token RPCs

BAD_PRINCIPAL_NAMES = ["a\x00b", "alice\nroot", "\x1b[31mred\x1b[0m", "rtl\u202eevil", "x" * 201]


async def test_create_token_rejects_control_characters_in_the_principal_name(
    service: Service,
) -> None:
    """NUL, newline, ESC, bidi overrides and overlong principal names are INVALID_ARGUMENT, never stored."""
    stub = ta_grpc.TokenAdminServiceStub(service.channel())
    md = service.md_for(Role.OWNER)
    for name in BAD_PRINCIPAL_NAMES:
        request = ta.CreateTokenRequest(principal_name=name, role=token_pb2.ROLE_MEMBER)
        await invalid(stub.CreateToken(request, metadata=md), "principal_name", name)
    listed = await stub.ListTokens(ta.ListTokensRequest(include_revoked=True), metadata=md)
    assert all(t.principal_name.isprintable() for t in listed.tokens)


async def test_revoke_token_never_echoes_its_id(service: Service) -> None:
    """RevokeToken answers a malformed id with INVALID_ARGUMENT and an unknown one with NOT_FOUND, neither quoting it."""
    stub = ta_grpc.TokenAdminServiceStub(service.channel())
    md = service.md_for(Role.OWNER)
    secret = service.tokens[Role.MEMBER]
    for value in ("", secret, "id\x00", "not-a-uuid", f"{uuid.uuid4()}\n"):
        await invalid(stub.RevokeToken(ta.RevokeTokenRequest(id=value), metadata=md), "id", value)
    unknown = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RevokeToken(ta.RevokeTokenRequest(id=unknown), metadata=md)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert unknown not in (caught.value.details() or "")


async def test_revoke_token_accepts_an_upper_case_id(service: Service) -> None:
    """A token id is a UUID in any case: the upper-case spelling revokes the token."""
    stub = ta_grpc.TokenAdminServiceStub(service.channel())
    md = service.md_for(Role.OWNER)
    created = await stub.CreateToken(
        ta.CreateTokenRequest(principal_name="carol", role=token_pb2.ROLE_MEMBER), metadata=md
    )
    revoked = await stub.RevokeToken(
        ta.RevokeTokenRequest(id=created.token.id.upper()), metadata=md
    )
    assert revoked.token.id == created.token.id and revoked.token.HasField("revoked_at")


async def test_provider_not_found_never_echoes_the_value(service: Service) -> None:
    """GetProvider/DeleteProvider NOT_FOUND does not quote the name or id the caller sent."""
    stub = pa_grpc.ProviderAdminServiceStub(service.channel())
    md = service.md_for(Role.OWNER)
    for value in (PASTED_SECRET, str(uuid.uuid4())):
        for call in (
            stub.GetProvider(pa.GetProviderRequest(id_or_name=value), metadata=md),
            stub.DeleteProvider(pa.DeleteProviderRequest(id_or_name=value), metadata=md),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            details = caught.value.details() or ""
            assert "not found" in details and value not in details


async def test_delete_provider_key_never_echoes_the_key_id(service: Service) -> None:
    """DeleteProviderKey of a key the provider does not have is NOT_FOUND without the key id."""
    stub = pa_grpc.ProviderAdminServiceStub(service.channel())
    md = service.md_for(Role.OWNER)
    create = pa.CreateProviderRequest(
        name="edge", type=provider_pb2.PROVIDER_TYPE_OPENAI, keys=["sk-edge-0123456789abcdef"]
    )
    await stub.CreateProvider(create, metadata=md)
    unknown = str(uuid.uuid4())
    request = pa.DeleteProviderKeyRequest(id_or_name="edge", key_id=unknown)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DeleteProviderKey(request, metadata=md)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert unknown not in (caught.value.details() or "")
    await invalid(
        stub.DeleteProviderKey(
            pa.DeleteProviderKeyRequest(id_or_name="edge", key_id=PASTED_SECRET), metadata=md
        ),
        "key_id",
        PASTED_SECRET,
    )


async def test_a_trailing_newline_never_passes_a_pattern(service: Service) -> None:
    """A name or id with a trailing newline is INVALID_ARGUMENT (Python's `$` matched before it)."""
    stub = pa_grpc.ProviderAdminServiceStub(service.channel())
    md = service.md_for(Role.OWNER)
    create = pa.CreateProviderRequest(
        name="openai\n", type=provider_pb2.PROVIDER_TYPE_OPENAI, keys=["sk-edge-0123456789abcdef"]
    )
    await invalid(stub.CreateProvider(create, metadata=md), "name")
    for value in ("openai\n", f"{uuid.uuid4()}\n"):
        await invalid(
            stub.GetProvider(pa.GetProviderRequest(id_or_name=value), metadata=md), "id_or_name"
        )


# ------------------------------------------------------------------------------ malformed bodies

TRUNCATED = b"\xff"  # a tag whose varint never ends
BAD_UTF8 = b"\x0a\x02\xc3\x28"  # field 1, length 2, not UTF-8


def every_method() -> list[tuple[str, bool, bool, list[bytes]]]:
    """(path, client streaming, server streaming, malformed bodies) of every RPC served;
    the invalid UTF-8 body only where field 1 of the request is a string."""
    files = [cs.DESCRIPTOR, pa.DESCRIPTOR, ta.DESCRIPTOR, health_pb2.DESCRIPTOR]
    files.append(reflection_pb2.DESCRIPTOR)
    methods = []
    for f in files:
        for service in f.services_by_name.values():
            for m in service.methods:
                first = m.input_type.fields_by_number.get(1)
                bodies = [TRUNCATED]
                if first is not None and first.type == FieldDescriptor.TYPE_STRING:
                    bodies.append(BAD_UTF8)
                path = f"/{service.full_name}/{m.name}"
                methods.append((path, m.client_streaming, m.server_streaming, bodies))
                if service.full_name == "grpc.reflection.v1alpha.ServerReflection":
                    # Reflection v1 is the v1alpha servicer under another package name.
                    v1 = path.replace(".v1alpha.", ".v1.")
                    methods.append((v1, m.client_streaming, m.server_streaming, bodies))
    return methods


async def call_raw(
    channel: grpc.aio.Channel,
    method: str,
    client_streaming: bool,
    server_streaming: bool,
    body: bytes,
    md: tuple[tuple[str, str], ...],
) -> Any:
    """Send `body` as the request of `method`, bytes as they are; return the first answer."""

    def raw(payload: bytes) -> bytes:
        return payload

    if client_streaming:
        stream = channel.stream_stream(method, request_serializer=raw, response_deserializer=raw)
        call = stream(iter([body]), metadata=md, timeout=10)
        return await call.read() if server_streaming else await call
    if server_streaming:
        return await channel.unary_stream(
            method, request_serializer=raw, response_deserializer=raw
        )(body, metadata=md, timeout=10).read()
    return await channel.unary_unary(method, request_serializer=raw, response_deserializer=raw)(
        body, metadata=md, timeout=10
    )


# Methods the owner may not call (refused before the body is read): called as the bridge.
_DAEMON_METHODS = {
    "/aibridge.config.v1.ConfigService/ReportStatus",
    "/aibridge.config.v1.UsageService/RecordInterceptions",
}


async def test_malformed_body_is_invalid_argument_for_every_rpc(service: Service) -> None:
    """A request body that is not a valid protobuf message is INVALID_ARGUMENT on every RPC, for a caller allowed to call it, never UNKNOWN."""
    channel = service.channel()
    methods = every_method()
    assert len(methods) >= 16 and any(len(bodies) == 2 for *_, bodies in methods)
    for method, client_streaming, server_streaming, bodies in methods:
        for body in bodies:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call_raw(
                    channel,
                    method,
                    client_streaming,
                    server_streaming,
                    body,
                    service.md_for(Role.BRIDGE if method in _DAEMON_METHODS else Role.OWNER),
                )
            error = caught.value
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, body, error)
            assert "malformed request" in (error.details() or "")
    # The guard does not get in the way of well-formed calls of each kind.
    ok = await call_raw(
        channel,
        "/grpc.health.v1.Health/Check",
        False,
        False,
        health_pb2.HealthCheckRequest().SerializeToString(),
        (),
    )
    assert (
        health_pb2.HealthCheckResponse.FromString(ok).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    listed = await call_raw(
        channel,
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        True,
        True,
        reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString(),
        (),
    )
    names = reflection_pb2.ServerReflectionResponse.FromString(listed).list_services_response
    assert "aibridge.config.v1.ConfigService" in {s.name for s in names.service}
    watch = await watching(service, "after-malformed")
    await eventually(lambda: len(service.running.registry.all()) == 1)
    watch.cancel()


# ------------------------------------------------------------------------------ open streams


async def test_anonymous_health_and_reflection_streams_are_capped(service: Service) -> None:
    """Health Watch and reflection streams, which need no token, are refused RESOURCE_EXHAUSTED past MAX_OPEN_STREAMS open at once (so no anonymous client holds every RPC the server takes); Check, a daemon's watch and a stream opened after one closes still work."""
    channel = service.channel()
    health = health_pb2_grpc.HealthStub(channel)
    held = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(MAX_OPEN_STREAMS)]
    for call in held:
        assert (await call.read()).status == health_pb2.HealthCheckResponse.SERVING
    refused = [
        health.Watch(health_pb2.HealthCheckRequest()),
        reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        ),
    ]
    for call in refused:
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await call.read()
        assert ended.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    check = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    watch = cs_grpc.ConfigServiceStub(channel).WatchProviders(
        cs.WatchProvidersRequest(node_id="daemon"), metadata=service.md_for(Role.BRIDGE)
    )
    assert (await asyncio.wait_for(watch.read(), 10)).snapshot.version
    watch.cancel()
    held.pop().cancel()

    async def reopened() -> bool:
        call = health.Watch(health_pb2.HealthCheckRequest())
        try:
            return (await call.read()).status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError:
            return False
        finally:
            call.cancel()

    await eventually(reopened, within=10)
    for call in held:
        call.cancel()
