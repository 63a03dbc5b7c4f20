"""The config service's Prometheus metrics, and how disabled providers travel in snapshots."""

from __future__ import annotations

import asyncio

import httpx
from google.protobuf.field_mask_pb2 import FieldMask

from aibridge.config.v1 import config_service_pb2 as pb
from aibridge.config.v1 import config_service_pb2_grpc as pb_grpc
from aibridge.config.v1 import provider_admin_service_pb2 as pa
from aibridge.config.v1 import provider_admin_service_pb2_grpc as pa_grpc
from aibridge.config.v1 import provider_pb2
from config_service.rbac import Role
from tests.fixtures.services import StartService

KEY = "sk-status-PLAINTEXT-0123456789abcdef"


async def test_metrics_report_subscribers_revision_and_sends(start_service: StartService) -> None:
    """/metrics shows open streams by role, the published revision and snapshots sent."""
    service = await start_service(AIBRIDGE_METRICS_LISTEN="127.0.0.1:0")
    port = service.running.metrics_port
    assert port
    call = pb_grpc.ConfigServiceStub(service.channel()).WatchProviders(
        pb.WatchProvidersRequest(node_id="m"), metadata=service.md_for(Role.BRIDGE)
    )
    await asyncio.wait_for(call.read(), 10)
    async with httpx.AsyncClient() as http:
        page = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    call.cancel()
    assert 'aibridge_config_subscribers{role="bridge"} 1.0' in page
    assert f"aibridge_config_revision {float(service.running.hub.revision)}" in page
    assert 'aibridge_config_snapshots_sent_total{scope="bridge"} 1.0' in page
    assert "aibridge_config_snapshot_build_seconds_count" in page


async def test_disabled_provider_is_present_without_secrets(start_service: StartService) -> None:
    """A disabled provider stays in every scope's snapshot with status DISABLED and no secret."""
    service = await start_service(AIBRIDGE_OPENAI_KEY=KEY)
    admin = pa_grpc.ProviderAdminServiceStub(service.channel())
    await admin.UpdateProvider(
        pa.UpdateProviderRequest(
            id_or_name="openai", enabled=False, update_mask=FieldMask(paths=["enabled"])
        ),
        metadata=service.md_for(Role.OWNER),
    )
    stub = pb_grpc.ConfigServiceStub(service.channel())
    for role in (Role.BRIDGE, Role.PROXY, Role.AUDITOR):
        got = await stub.GetProviderSnapshot(
            pb.GetProviderSnapshotRequest(), metadata=service.md_for(role)
        )
        (provider,) = got.snapshot.providers
        assert provider.status == provider_pb2.PROVIDER_STATUS_DISABLED
        assert KEY.encode() not in got.snapshot.SerializeToString()
