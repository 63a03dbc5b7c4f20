"""The config service's RPC spans: one SERVER span per unary RPC with the gRPC status it
answered, exported over OTLP to a receiver in the test; a caller's fault is not marked
as the server's error, and no token or key reaches a span."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from aibridge.config.v1 import provider_admin_service_pb2 as pa
from aibridge.config.v1 import provider_admin_service_pb2_grpc as pa_grpc
from aibridge.config.v1 import provider_pb2
from config_service.rbac import Role
from tests.fixtures.otlp import Receiver
from tests.fixtures.services import StartService
from tests.fixtures.waits import eventually

KEY = "sk-rpc-span-key-0123456789abcdef"
ERROR = 2  # OTLP status code


async def test_rpc_spans_carry_the_status_answered(
    start_service: StartService, receiver: Receiver
) -> None:
    """A write answered OK and one refused PERMISSION_DENIED are each one SERVER span naming the method and status; the refusal is the caller's fault, not a span error."""
    service = await start_service(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.grpc_endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
    )
    stub = pa_grpc.ProviderAdminServiceStub(service.channel())
    request = pa.CreateProviderRequest(
        name="traced", type=provider_pb2.PROVIDER_TYPE_OPENAI, keys=[KEY]
    )
    await stub.CreateProvider(request, metadata=service.md_for(Role.OWNER))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateProvider(request, metadata=service.md_for(Role.MEMBER))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    telemetry = service.running.telemetry
    assert telemetry is not None
    # Flushes every span now (off the loop: the receiver answers on this loop).
    assert await asyncio.to_thread(telemetry.shutdown)

    name = "aibridge.config.v1.ProviderAdminService/CreateProvider"
    await eventually(lambda: len([s for s in receiver.spans() if s.name == name]) == 2)
    spans = [s for s in receiver.spans() if s.name == name]
    by_status = {s.attributes["rpc.grpc.status_code"]: s for s in spans}
    assert set(by_status) == {0, grpc.StatusCode.PERMISSION_DENIED.value[0]}
    denied = by_status[grpc.StatusCode.PERMISSION_DENIED.value[0]]
    assert denied.attributes["error.type"] == "PERMISSION_DENIED"
    assert denied.status != ERROR
    assert by_status[0].attributes["rpc.service"] == "aibridge.config.v1.ProviderAdminService"
    assert all(s.service == "aibridge-config-service" for s in receiver.spans())
    text = repr([(s.name, s.attributes) for s in receiver.spans()])
    for secret in (KEY, *service.tokens.values()):
        assert secret not in text
