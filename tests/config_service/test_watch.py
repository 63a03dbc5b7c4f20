"""WatchProviders / GetProviderSnapshot: scoped, versioned, pushed on change."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from aibridge.config.v1 import config_service_pb2 as pb
from aibridge.config.v1 import config_service_pb2_grpc as pb_grpc
from aibridge.config.v1 import provider_pb2, token_pb2
from aibridge.config.v1 import token_admin_service_pb2 as tpb
from aibridge.config.v1 import token_admin_service_pb2_grpc as tpb_grpc
from aibridge.masking import sha256_hex
from config_service.rbac import Role
from tests.fixtures.services import Service, StartService

OPENAI_KEY = "sk-openai-PLAINTEXT-0123456789abcdef"
ANTHROPIC_KEYS = ("sk-ant-FIRST-0123456789abcdefgh", "sk-ant-SECOND-0123456789abcdefgh")
BEDROCK_SECRET = "bedrock-SECRET-0123456789abcdefghij"

SEED = {
    "AIBRIDGE_OPENAI_KEY": OPENAI_KEY,
    "AIBRIDGE_PROVIDER_0_TYPE": "anthropic",
    "AIBRIDGE_PROVIDER_0_NAME": "claude",
    "AIBRIDGE_PROVIDER_0_KEYS": ",".join(ANTHROPIC_KEYS),
    "AIBRIDGE_PROVIDER_1_TYPE": "bedrock",
    "AIBRIDGE_PROVIDER_1_NAME": "aws",
    "AIBRIDGE_PROVIDER_1_BEDROCK_REGION": "us-east-1",
    "AIBRIDGE_PROVIDER_1_BEDROCK_ACCESS_KEY": "AKIAEXAMPLEKEY123456",
    "AIBRIDGE_PROVIDER_1_BEDROCK_ACCESS_KEY_SECRET": BEDROCK_SECRET,
}
SECRETS = (OPENAI_KEY, *ANTHROPIC_KEYS, BEDROCK_SECRET, "AKIAEXAMPLEKEY123456")


@pytest.fixture
async def seeded(start_service: StartService) -> Service:
    return await start_service(**SEED)


async def first_snapshot(service: Service, role: Role, known: str = "") -> pb.ProviderSnapshot:
    stub = pb_grpc.ConfigServiceStub(service.channel())
    call = stub.WatchProviders(
        pb.WatchProvidersRequest(node_id="test", known_version=known), metadata=service.md_for(role)
    )
    response = await asyncio.wait_for(call.read(), 10)
    call.cancel()
    assert isinstance(response, pb.WatchProvidersResponse)
    return response.snapshot


def by_name(snapshot: pb.ProviderSnapshot) -> dict[str, provider_pb2.Provider]:
    return {p.name: p for p in snapshot.providers}


async def test_bridge_scope_carries_plaintext_keys_in_pool_order(seeded: Service) -> None:
    """The bridge token sees plaintext keys, oldest first, and Bedrock credentials."""
    snap = await first_snapshot(seeded, Role.BRIDGE)
    providers = by_name(snap)
    assert [k.secret for k in providers["claude"].keys] == list(ANTHROPIC_KEYS)
    assert providers["openai"].keys[0].secret == OPENAI_KEY
    assert providers["aws"].bedrock.access_key_secret == BEDROCK_SECRET
    assert snap.scope == pb.SNAPSHOT_SCOPE_BRIDGE


async def test_auditor_scope_masks_every_key(seeded: Service) -> None:
    """The auditor token sees key ids and masked hints, never a secret."""
    snap = await first_snapshot(seeded, Role.AUDITOR)
    raw = snap.SerializeToString()
    for secret in SECRETS:
        assert secret.encode() not in raw
    claude = by_name(snap)["claude"]
    assert [k.hint for k in claude.keys] == ["sk-a...efgh", "sk-a...efgh"]
    assert all(k.id for k in claude.keys)
    assert not snap.gateway_tokens


async def test_proxy_scope_has_no_key_material(seeded: Service) -> None:
    """The proxy token sees providers and gateway token hashes but no key, hint or credential."""
    snap = await first_snapshot(seeded, Role.PROXY)
    raw = snap.SerializeToString()
    for secret in SECRETS:
        assert secret.encode() not in raw
    for provider in snap.providers:
        assert not provider.keys
        assert not provider.bedrock.access_key_hint
        assert not provider.bedrock.access_key
    assert by_name(snap)["claude"].key_count == 2
    assert snap.gateway_tokens


async def test_no_token_is_unauthenticated(seeded: Service) -> None:
    """A watch without a token fails with UNAUTHENTICATED."""
    stub = pb_grpc.ConfigServiceStub(seeded.channel())
    call = stub.WatchProviders(pb.WatchProvidersRequest(node_id="x"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_unknown_token_is_unauthenticated(seeded: Service) -> None:
    """A watch with a token the service never issued fails with UNAUTHENTICATED."""
    stub = pb_grpc.ConfigServiceStub(seeded.channel())
    call = stub.WatchProviders(pb.WatchProvidersRequest(), metadata=Service.md("nope-" * 8))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_member_is_permission_denied(seeded: Service) -> None:
    """A member token may use the gateway but not watch the snapshot."""
    stub = pb_grpc.ConfigServiceStub(seeded.channel())
    call = stub.WatchProviders(pb.WatchProvidersRequest(), metadata=seeded.md_for(Role.MEMBER))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_snapshot_is_sorted_and_versioned_by_revision(seeded: Service) -> None:
    """Providers are sorted by name and the version is the database revision."""
    snap = await first_snapshot(seeded, Role.AUDITOR)
    assert [p.name for p in snap.providers] == ["aws", "claude", "openai"]
    revision = await asyncio.to_thread(seeded.running.db.revision)
    assert snap.version == str(revision)


async def test_get_snapshot_equals_the_streamed_one(seeded: Service) -> None:
    """GetProviderSnapshot answers the same snapshot as the stream, in the caller's scope."""
    stub = pb_grpc.ConfigServiceStub(seeded.channel())
    got = await stub.GetProviderSnapshot(
        pb.GetProviderSnapshotRequest(), metadata=seeded.md_for(Role.BRIDGE)
    )
    streamed = await first_snapshot(seeded, Role.BRIDGE)
    assert got.snapshot == streamed


async def test_known_version_suppresses_the_initial_send(seeded: Service) -> None:
    """A watcher that already has the current version gets nothing until a change."""
    current = seeded.running.hub.version
    stub = pb_grpc.ConfigServiceStub(seeded.channel())
    call = stub.WatchProviders(
        pb.WatchProvidersRequest(node_id="n", known_version=current),
        metadata=seeded.md_for(Role.BRIDGE),
    )
    read = asyncio.ensure_future(call.read())
    await asyncio.sleep(0.3)
    assert not read.done()
    await create_member_token(seeded)
    response = await asyncio.wait_for(read, 10)
    assert isinstance(response, pb.WatchProvidersResponse)
    assert int(response.snapshot.version) > int(current)
    call.cancel()


async def create_member_token(service: Service) -> tpb.CreateTokenResponse:
    stub = tpb_grpc.TokenAdminServiceStub(service.channel())
    response: tpb.CreateTokenResponse = await stub.CreateToken(
        tpb.CreateTokenRequest(principal_name="alice", role=token_pb2.ROLE_MEMBER),
        metadata=service.md_for(Role.OWNER),
    )
    return response


async def test_change_reaches_open_streams_before_the_write_returns(seeded: Service) -> None:
    """A token created through the API is on every open stream when CreateToken returns."""
    stub = pb_grpc.ConfigServiceStub(seeded.channel())
    calls = [
        stub.WatchProviders(
            pb.WatchProvidersRequest(node_id=f"n{i}"), metadata=seeded.md_for(Role.BRIDGE)
        )
        for i in range(5)
    ]
    for call in calls:
        await asyncio.wait_for(call.read(), 10)
    created = await create_member_token(seeded)
    digest = sha256_hex(created.secret)
    for call in calls:
        response = await asyncio.wait_for(call.read(), 2)
        assert isinstance(response, pb.WatchProvidersResponse)
        assert digest in {t.sha256 for t in response.snapshot.gateway_tokens}
        call.cancel()


async def test_revoked_token_leaves_the_next_snapshot(seeded: Service) -> None:
    """Revoking a gateway token removes its hash from the next snapshot, and it stops authenticating."""
    created = await create_member_token(seeded)
    stub = pb_grpc.ConfigServiceStub(seeded.channel())
    call = stub.WatchProviders(
        pb.WatchProvidersRequest(node_id="n"), metadata=seeded.md_for(Role.PROXY)
    )
    first = await asyncio.wait_for(call.read(), 10)
    assert isinstance(first, pb.WatchProvidersResponse)
    digest = sha256_hex(created.secret)
    assert digest in {t.sha256 for t in first.snapshot.gateway_tokens}
    tokens = tpb_grpc.TokenAdminServiceStub(seeded.channel())
    await tokens.RevokeToken(
        tpb.RevokeTokenRequest(id=created.token.id), metadata=seeded.md_for(Role.OWNER)
    )
    second = await asyncio.wait_for(call.read(), 5)
    assert isinstance(second, pb.WatchProvidersResponse)
    assert digest not in {t.sha256 for t in second.snapshot.gateway_tokens}
    assert int(second.snapshot.version) > int(first.snapshot.version)
    call.cancel()


async def test_versions_never_go_backwards_on_a_stream(seeded: Service) -> None:
    """Across a burst of concurrent writes a stream's versions strictly increase and end on the last."""
    stub = pb_grpc.ConfigServiceStub(seeded.channel())
    call = stub.WatchProviders(
        pb.WatchProvidersRequest(node_id="n"), metadata=seeded.md_for(Role.BRIDGE)
    )
    seen = [int((await call.read()).snapshot.version)]  # type: ignore[union-attr]
    await asyncio.gather(*(create_member_token(seeded) for _ in range(8)))
    final = int(seeded.running.hub.version)
    while seen[-1] < final:
        response = await asyncio.wait_for(call.read(), 5)
        assert isinstance(response, pb.WatchProvidersResponse)
        seen.append(int(response.snapshot.version))
    call.cancel()
    assert seen == sorted(set(seen))
    assert seen[-1] == final == await asyncio.to_thread(seeded.running.db.revision)


async def test_unusable_rows_are_reported_with_a_reason(start_service: StartService) -> None:
    """With BYOK disabled a keyless provider is ERROR with a reason, and the snapshot says so."""
    service = await start_service(
        AIBRIDGE_ALLOW_BYOK="false",
        AIBRIDGE_PROVIDER_0_TYPE="openai",
        AIBRIDGE_PROVIDER_0_NAME="keyless",
    )
    snap = await first_snapshot(service, Role.BRIDGE)
    keyless = by_name(snap)["keyless"]
    assert keyless.status == provider_pb2.PROVIDER_STATUS_ERROR
    assert "BYOK" in keyless.status_reason
    # The decision travels with the snapshot, so the data plane follows it.
    assert snap.HasField("allow_byok") and not snap.allow_byok
