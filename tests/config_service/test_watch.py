"""WatchProviders / GetProviderSnapshot: scoped, versioned, pushed on change."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from aibridge.config.v1 import config_service_pb2 as pb
from aibridge.config.v1 import config_service_pb2_grpc as pb_grpc
from aibridge.config.v1 import provider_pb2, token_pb2
from aibridge.config.v1 import token_admin_service_pb2 as tpb
from aibridge.config.v1 import token_admin_service_pb2_grpc as tpb_grpc
from aibridge.masking import sha256_hex
from config_service.rbac import SYSTEM, Role, Scope
from config_service.store import tokens
from tests.fixtures.services import BRIDGE_TOKEN, PROXY_TOKEN, Service, StartService
from tests.fixtures.waits import eventually

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
    await asyncio.sleep(0.3)  # a window: nothing arrives in it
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


async def create_token(service: Service, name: str, role: int) -> tpb.CreateTokenResponse:
    stub = tpb_grpc.TokenAdminServiceStub(service.channel())
    response: tpb.CreateTokenResponse = await stub.CreateToken(
        tpb.CreateTokenRequest(principal_name=name, role=role),
        metadata=service.md_for(Role.OWNER),
    )
    return response


async def open_streams(
    service: Service, token: str, count: int
) -> list[grpc.aio.UnaryStreamCall[pb.WatchProvidersRequest, pb.WatchProvidersResponse]]:
    """`count` streams with `token`, each past its first snapshot."""
    stub = pb_grpc.ConfigServiceStub(service.channel())
    calls = [
        stub.WatchProviders(pb.WatchProvidersRequest(node_id=f"s{i}"), metadata=Service.md(token))
        for i in range(count)
    ]
    for call in calls:
        assert isinstance(await asyncio.wait_for(call.read(), 10), pb.WatchProvidersResponse)
    return calls


async def ended_with(call: grpc.aio.UnaryStreamCall[Any, Any]) -> grpc.aio.AioRpcError:
    """The error that ends `call`; fails if another snapshot arrives instead."""
    try:
        response = await asyncio.wait_for(call.read(), 5)
    except grpc.aio.AioRpcError as exc:
        return exc
    version = response.snapshot.version if isinstance(response, pb.WatchProvidersResponse) else ""
    raise AssertionError(f"the stream went on (version {version!r})")


async def test_revoking_a_token_ends_every_open_stream_of_it(seeded: Service) -> None:
    """A revoked bridge token's open streams end with UNAUTHENTICATED, without the next snapshot; other streams go on."""
    # Bridge-role tokens are minted by the service itself (CreateToken refuses them).
    view, secret = await asyncio.to_thread(
        tokens.create_token, seeded.running.db, SYSTEM, "fleet", Role.BRIDGE
    )
    await seeded.running.hub.refresh()
    revoked = await open_streams(seeded, secret, 3)
    (other,) = await open_streams(seeded, BRIDGE_TOKEN, 1)
    admin = tpb_grpc.TokenAdminServiceStub(seeded.channel())
    await admin.RevokeToken(tpb.RevokeTokenRequest(id=view.id), metadata=seeded.md_for(Role.OWNER))
    for call in revoked:
        error = await ended_with(call)
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in (error.details() or "")
    response = await asyncio.wait_for(other.read(), 5)
    assert isinstance(response, pb.WatchProvidersResponse)
    assert response.snapshot.version == seeded.running.hub.version
    other.cancel()


async def test_a_role_change_ends_the_tokens_streams(seeded: Service) -> None:
    """A stream opened as auditor ends with UNAUTHENTICATED once its principal's role changes."""
    created = await create_token(seeded, "watcher", token_pb2.ROLE_AUDITOR)
    (call,) = await open_streams(seeded, created.secret, 1)

    def make_bridge() -> None:
        with seeded.running.db.engine.begin() as conn:
            conn.execute(text("UPDATE principals SET role = 'bridge' WHERE name = 'watcher'"))
            conn.execute(text("UPDATE revision SET revision = revision + 1"))

    await asyncio.to_thread(make_bridge)
    # Not asserted: on PostgreSQL the revision's NOTIFY may have refreshed the hub first.
    await seeded.running.hub.refresh()
    error = await ended_with(call)
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "role changed" in (error.details() or "")


async def test_watch_streams_per_principal_are_capped(start_service: StartService) -> None:
    """Past AIBRIDGE_MAX_WATCH_STREAMS_PER_PRINCIPAL a principal's next stream is refused with RESOURCE_EXHAUSTED; others are not affected."""
    service = await start_service(AIBRIDGE_MAX_WATCH_STREAMS_PER_PRINCIPAL="3")
    held = await open_streams(service, BRIDGE_TOKEN, 3)
    stub = pb_grpc.ConfigServiceStub(service.channel())
    excess = stub.WatchProviders(pb.WatchProvidersRequest(), metadata=service.md_for(Role.BRIDGE))
    error = await ended_with(excess)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "AIBRIDGE_MAX_WATCH_STREAMS_PER_PRINCIPAL" in (error.details() or "")
    (proxy,) = await open_streams(service, PROXY_TOKEN, 1)
    held[0].cancel()
    await eventually(lambda: service.running.registry.count_by_role()[Role.BRIDGE] < 3)
    (again,) = await open_streams(service, BRIDGE_TOKEN, 1)
    for call in (*held, proxy, again):
        call.cancel()


async def refused_watch(service: Service, known: str) -> grpc.aio.AioRpcError:
    """The error that ends a bridge's watch claiming `known`."""
    stub = pb_grpc.ConfigServiceStub(service.channel())
    call = stub.WatchProviders(
        pb.WatchProvidersRequest(node_id="n", known_version=known),
        metadata=service.md_for(Role.BRIDGE),
    )
    return await ended_with(call)


async def test_a_known_version_newer_than_the_database_is_refused(seeded: Service) -> None:
    """A subscriber claiming a version the database never reached gets FAILED_PRECONDITION, never the older snapshot."""
    ahead = str(seeded.running.hub.revision + 100)
    error = await refused_watch(seeded, ahead)
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert ahead in (error.details() or "")


@pytest.mark.parametrize("known", ["abc", "-1", "1e3", "٣", "9" * 40])
async def test_a_malformed_known_version_is_invalid(seeded: Service, known: str) -> None:
    """A known_version that is not a decimal revision is INVALID_ARGUMENT naming the field."""
    error = await refused_watch(seeded, known)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "known_version" in (error.details() or "")


async def test_known_versions_compare_as_numbers(seeded: Service) -> None:
    """A known_version below the current one is answered with the current snapshot, compared numerically ("9" < "10")."""
    while seeded.running.hub.revision < 10:
        await create_member_token(seeded)
    snap = await first_snapshot(seeded, Role.BRIDGE, known="9")
    assert snap.version == seeded.running.hub.version


async def test_a_change_published_while_a_write_waits_for_the_reader_is_sent_after_it(
    seeded: Service,
) -> None:
    """A change published while a stream's write is held by flow control follows that write, never skipped."""
    # A reader with a tiny HTTP/2 window: the first snapshot's write waits until it reads.
    channel = grpc.aio.insecure_channel(
        seeded.target, options=[("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
    )
    try:
        for _ in range(3):  # a snapshot larger than the window
            await create_member_token(seeded)
        assert len(seeded.running.hub.entry(Scope.BRIDGE).payload) > 1024
        call = pb_grpc.ConfigServiceStub(channel).WatchProviders(
            pb.WatchProvidersRequest(node_id="slow"), metadata=seeded.md_for(Role.BRIDGE)
        )
        registry = seeded.running.registry
        await eventually(lambda: [s.node_id for s in registry.all()] == ["slow"])
        opened_at = int(seeded.running.hub.version)
        await create_member_token(seeded)  # published while the first write is in flight
        final = int(seeded.running.hub.version)
        seen = []
        while not seen or seen[-1] < final:
            response = await asyncio.wait_for(call.read(), 5)
            assert isinstance(response, pb.WatchProvidersResponse)
            seen.append(int(response.snapshot.version))
        assert seen == [opened_at, final]
        call.cancel()
    finally:
        await channel.close()


async def test_closed_streams_leave_no_waiter_behind(seeded: Service) -> None:
    """Streams that close between two changes take what they registered with them (the servicer's stream and token sets, no hub waiter), so churn grows nothing."""
    hub = seeded.running.hub
    config = seeded.running.config
    assert config is not None
    # Only the service's own loops wait on the hub: the revision check (between two of
    # its checks) and the health follower; the streams are the servicer's fan-out's.
    own = 2
    calls = await open_streams(seeded, BRIDGE_TOKEN, 20)
    await eventually(lambda: config.watching == (20, 1))
    assert hub.waiting <= own
    for call in calls:
        call.cancel()
    await eventually(lambda: seeded.running.registry.count_by_role()[Role.BRIDGE] == 0)
    await eventually(lambda: config.watching == (0, 0))
    assert hub.waiting <= own


async def watch_claiming(
    service: Service, role: Role, history: str, version: int
) -> pb.ProviderSnapshot | grpc.aio.AioRpcError:
    """The first snapshot (or the error) a watch claiming `version` of `history` gets."""
    stub = pb_grpc.ConfigServiceStub(service.channel())
    call = stub.WatchProviders(
        pb.WatchProvidersRequest(
            node_id="claimer", known_version=str(version), known_history=history
        ),
        metadata=service.md_for(role),
    )
    try:
        response = await asyncio.wait_for(call.read(), 10)
    except grpc.aio.AioRpcError as exc:
        return exc
    call.cancel()
    assert isinstance(response, pb.WatchProvidersResponse)
    return response.snapshot


async def test_claims_beyond_the_database_start_at_most_one_history_a_minute(
    seeded: Service,
) -> None:
    """A version beyond the database claimed of its history starts a new history when a daemon (bridge, proxy) claims it, once a minute at most (then UNAVAILABLE), and never for an auditor or owner: no watcher can make the service rewrite its history and resend every snapshot at will."""
    hub = seeded.running.hub
    first = hub.history
    for role in (Role.AUDITOR, Role.OWNER):
        answer = await watch_claiming(seeded, role, first, hub.revision + 100)
        assert isinstance(answer, pb.ProviderSnapshot)
        assert answer.history == first
    assert hub.history == first
    answer = await watch_claiming(seeded, Role.PROXY, first, hub.revision + 100)
    assert isinstance(answer, pb.ProviderSnapshot)
    assert answer.history == hub.history != first  # the restore this claim is for
    second = hub.history
    for _ in range(3):
        answer = await watch_claiming(seeded, Role.BRIDGE, second, hub.revision + 100)
        assert isinstance(answer, grpc.aio.AioRpcError)
        assert answer.code() is grpc.StatusCode.UNAVAILABLE
    assert hub.history == second
