"""The watch streams' fan-out under attack (branch fanv's `_fan_out`, `_Trust`, `Follower`):
revocations and role changes against open and opening streams, readers that stall or
vanish, bursts of changes, churn, hostile node ids and the non-bridge scopes; each at the
transport (a real config service on port 0, real grpc clients)."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from aibridge.config.v1 import config_service_pb2 as pb
from aibridge.config.v1 import config_service_pb2_grpc as pb_grpc
from aibridge.config.v1 import provider_admin_service_pb2 as pa
from aibridge.config.v1 import provider_admin_service_pb2_grpc as pa_grpc
from aibridge.config.v1 import provider_pb2, token_pb2
from aibridge.config.v1 import token_admin_service_pb2 as tpb
from aibridge.config.v1 import token_admin_service_pb2_grpc as tpb_grpc
from config_service.rbac import SYSTEM, Role
from config_service.server import start
from config_service.settings import ConfigServiceSettings
from config_service.store import tokens
from tests.config_service.test_watch import (
    create_member_token,
    create_token,
    ended_with,
    open_streams,
)
from tests.fixtures.otlp import Receiver, Span
from tests.fixtures.services import ADMIN_TOKEN, BRIDGE_TOKEN, Service, StartService, base_env
from tests.fixtures.waits import eventually
from tests.resilience.harness import TcpProxy

Call = grpc.aio.UnaryStreamCall[pb.WatchProvidersRequest, pb.WatchProvidersResponse]
SECRET = "sk-fanout-SECRET-0123456789abcdef"


async def bridge_token(service: Service, name: str) -> tuple[str, str]:
    """A bridge-role token minted by the service itself (CreateToken refuses them): id, secret."""
    view, secret = await asyncio.to_thread(
        tokens.create_token, service.running.db, SYSTEM, name, Role.BRIDGE
    )
    await service.running.hub.refresh()
    return view.id, secret


def revoke_behind_the_hub(service: Service, token_id: str) -> None:
    """Revoke a token in the database as another replica would: this hub is not told."""
    with service.running.db.engine.begin() as conn:
        conn.execute(
            text("UPDATE tokens SET revoked_at = CURRENT_TIMESTAMP WHERE id = :id"),
            {"id": token_id},
        )
        conn.execute(text("UPDATE revision SET revision = revision + 1"))


def set_role_behind_the_hub(service: Service, principal: str, role: str) -> None:
    with service.running.db.engine.begin() as conn:
        conn.execute(
            text("UPDATE principals SET role = :role WHERE name = :name"),
            {"role": role, "name": principal},
        )
        conn.execute(text("UPDATE revision SET revision = revision + 1"))


def watch(service: Service, secret: str, node_id: str = "n", **fields: Any) -> Call:
    stub = pb_grpc.ConfigServiceStub(service.channel())
    request = pb.WatchProvidersRequest(node_id=node_id, **fields)
    call: Call = stub.WatchProviders(request, metadata=Service.md(secret))
    return call


async def next_version(call: Call, within: float = 5) -> int:
    response = await asyncio.wait_for(call.read(), within)
    assert isinstance(response, pb.WatchProvidersResponse), response
    return int(response.snapshot.version)


async def answer(call: Call, within: float = 5) -> pb.WatchProvidersResponse | grpc.aio.AioRpcError:
    """The stream's next message, or the error that ended it."""
    try:
        response = await asyncio.wait_for(call.read(), within)
    except grpc.aio.AioRpcError as exc:
        return exc
    assert isinstance(response, pb.WatchProvidersResponse), response
    return response


async def revoke(service: Service, token_id: str) -> None:
    admin = tpb_grpc.TokenAdminServiceStub(service.channel())
    await admin.RevokeToken(
        tpb.RevokeTokenRequest(id=token_id), metadata=service.md_for(Role.OWNER)
    )


# ------------------------------------------------------------------ revocation and roles


async def test_a_token_revoked_while_its_watch_opens_is_sent_nothing(service: Service) -> None:
    """A watch whose opening catches up with a revocation of its own token (published while it opened) ends UNAUTHENTICATED without a snapshot, as an open stream would."""
    token_id, secret = await bridge_token(service, "opening")
    await asyncio.to_thread(revoke_behind_the_hub, service, token_id)
    # A subscriber of another history: the service catches up before answering it, and
    # that catch-up publishes the revocation after the token was authenticated.
    call = watch(service, secret, known_version="1", known_history="elsewhere")
    error = await ended_with(call)
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_a_token_demoted_while_its_watch_opens_never_gets_the_bridge_scope(
    service: Service,
) -> None:
    """A bridge token whose principal is made an auditor while its watch opens gets no bridge snapshot (no secret) on that stream."""
    provider = pa_grpc.ProviderAdminServiceStub(service.channel())
    await provider.CreateProvider(
        pa.CreateProviderRequest(name="p", type=provider_pb2.PROVIDER_TYPE_OPENAI, keys=[SECRET]),
        metadata=service.md_for(Role.OWNER),
    )
    _, secret = await bridge_token(service, "demoted")
    await asyncio.to_thread(set_role_behind_the_hub, service, "demoted", "auditor")
    call = watch(service, secret, known_version="1", known_history="elsewhere")
    got = await answer(call)
    if isinstance(got, grpc.aio.AioRpcError):
        assert got.code() is grpc.StatusCode.UNAUTHENTICATED
    else:  # PostgreSQL: the NOTIFY may have published the change before the watch came
        assert got.snapshot.scope != pb.SNAPSHOT_SCOPE_BRIDGE
        assert SECRET.encode() not in got.snapshot.SerializeToString()
        call.cancel()


async def test_revoking_one_of_two_tokens_of_a_role_ends_only_its_streams(
    service: Service,
) -> None:
    """Two auditor tokens, several streams each: revoking one ends all of its streams; the other's streams all get the revocation's snapshot."""
    first = await create_token(service, "audit-a", token_pb2.ROLE_AUDITOR)
    second = await create_token(service, "audit-b", token_pb2.ROLE_AUDITOR)
    revoked = await open_streams(service, first.secret, 4)
    kept = await open_streams(service, second.secret, 4)
    config = service.running.config
    assert config is not None
    await revoke(service, first.token.id)
    for call in revoked:
        assert (await ended_with(call)).code() is grpc.StatusCode.UNAUTHENTICATED
    for call in kept:
        assert await next_version(call) == service.running.hub.revision
    await eventually(lambda: config.watching == (4, 1))
    for call in kept:
        call.cancel()


async def test_a_revocation_reaching_a_stream_with_a_write_in_flight_sends_it_nothing_newer(
    service: Service,
) -> None:
    """A stream whose writes are held by flow control when its token is revoked gets what was offered before the revocation and then UNAUTHENTICATED, never the revocation's snapshot."""
    token_id, secret = await bridge_token(service, "held")
    for _ in range(3):  # a snapshot larger than the reader's window
        await create_member_token(service)
    channel = grpc.aio.insecure_channel(
        service.target, options=[("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
    )
    try:
        request = pb.WatchProvidersRequest(node_id="held")
        call = pb_grpc.ConfigServiceStub(channel).WatchProviders(
            request, metadata=Service.md(secret)
        )
        registry = service.running.registry
        await eventually(lambda: [s.node_id for s in registry.all()] == ["held"])
        await create_member_token(service)  # offered while the first write is held
        await revoke(service, token_id)
        revoked_at = service.running.hub.revision
        seen: list[int] = []
        got = await answer(call)
        while isinstance(got, pb.WatchProvidersResponse):
            seen.append(int(got.snapshot.version))
            got = await answer(call)
        assert got.code() is grpc.StatusCode.UNAUTHENTICATED
        assert seen and max(seen) < revoked_at, (seen, revoked_at)
    finally:
        await channel.close()


async def test_a_role_change_ends_every_stream_of_the_token_and_new_ones_follow(
    service: Service,
) -> None:
    """Many streams of one auditor token end when its role changes; a stream opened after, under the new role, follows the later changes."""
    created = await create_token(service, "shifting", token_pb2.ROLE_AUDITOR)
    calls = await open_streams(service, created.secret, 5)
    await asyncio.to_thread(set_role_behind_the_hub, service, "shifting", "owner")
    await service.running.hub.refresh()
    for call in calls:
        error = await ended_with(call)
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "role changed" in (error.details() or "")
    (again,) = await open_streams(service, created.secret, 1)
    await create_member_token(service)
    assert await next_version(again) == service.running.hub.revision
    again.cancel()


# --------------------------------------------------------- readers that stall or vanish


async def test_a_reader_that_never_reads_delays_no_other_stream_and_gets_the_newest(
    service: Service,
) -> None:
    """With one stream stalled by flow control, the others get each of many changes; once it reads it gets its held write and then the newest snapshot only."""
    for _ in range(3):
        await create_member_token(service)
    channel = grpc.aio.insecure_channel(
        service.target, options=[("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
    )
    try:
        stuck = pb_grpc.ConfigServiceStub(channel).WatchProviders(
            pb.WatchProvidersRequest(node_id="stuck"), metadata=service.md_for(Role.BRIDGE)
        )
        registry = service.running.registry
        await eventually(lambda: [s.node_id for s in registry.all()] == ["stuck"])
        opened_at = service.running.hub.revision
        others = await open_streams(service, BRIDGE_TOKEN, 3)
        for _ in range(10):
            await create_member_token(service)
            for call in others:
                assert await next_version(call) == service.running.hub.revision
        final = service.running.hub.revision
        # What grpc had taken before the window filled, then the newest only.
        seen = [await next_version(stuck)]
        while seen[-1] < final:
            seen.append(await next_version(stuck))
        assert seen[0] == opened_at and seen == sorted(set(seen)) and len(seen) <= 3, seen
        for call in (stuck, *others):
            call.cancel()
    finally:
        await channel.close()


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The ERROR records so far, once garbage is collected (asyncio logs a future's
    exception that nobody retrieved when the future is collected)."""
    gc.collect()
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_streams_cancelled_with_writes_held_leave_no_error_in_the_log(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """Clients that cancel streams whose writes are held by flow control (a fleet going away mid-fan-out) leave no error in the service's log: the dropped writes' failures are expected."""
    config = service.running.config
    assert config is not None
    for _ in range(3):
        await create_member_token(service)
    channel = grpc.aio.insecure_channel(
        service.target, options=[("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
    )
    try:
        stub = pb_grpc.ConfigServiceStub(channel)
        calls = [
            stub.WatchProviders(
                pb.WatchProvidersRequest(node_id=f"held-{i}"), metadata=service.md_for(Role.BRIDGE)
            )
            for i in range(200)
        ]
        await eventually(lambda: config.watching == (200, 1))
        for call in calls:
            call.cancel()
        await eventually(lambda: config.watching == (0, 0))
        await create_member_token(service)  # a fan-out after: the loop has run on
    finally:
        await channel.close()
    assert not errors_logged(caplog)


async def test_streams_that_vanish_just_before_a_change_leave_the_others_served(
    service: Service,
) -> None:
    """Streams cancelled and channels dropped right before a change (and during its fan-out) do not stop the remaining streams getting it, and are all removed."""
    config = service.running.config
    assert config is not None
    kept = await open_streams(service, BRIDGE_TOKEN, 5)
    channels = [grpc.aio.insecure_channel(service.target) for _ in range(5)]
    dropped = []
    for channel in channels:
        call = pb_grpc.ConfigServiceStub(channel).WatchProviders(
            pb.WatchProvidersRequest(node_id="gone"), metadata=service.md_for(Role.BRIDGE)
        )
        await next_version(call)
        dropped.append(call)
    cancelled = await open_streams(service, BRIDGE_TOKEN, 5)
    await eventually(lambda: config.watching == (15, 1))
    write = asyncio.ensure_future(create_member_token(service))
    for call in cancelled:
        call.cancel()
    for channel in channels:
        await channel.close(grace=None)
    await write
    for call in kept:
        assert await next_version(call) == service.running.hub.revision
    await eventually(lambda: config.watching == (5, 1))
    await create_member_token(service)
    for call in kept:
        assert await next_version(call) == service.running.hub.revision
        call.cancel()


async def test_streams_whose_deadline_passes_during_a_burst_end_cleanly(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """Streams opened with a short deadline, expiring while a burst of changes is fanned out to them, end DEADLINE_EXCEEDED for their clients and leave nothing registered and no error in the log."""
    config = service.running.config
    assert config is not None
    stub = pb_grpc.ConfigServiceStub(service.channel())
    calls = [
        stub.WatchProviders(
            pb.WatchProvidersRequest(node_id=f"brief-{i}"),
            metadata=service.md_for(Role.BRIDGE),
            timeout=0.5 + i / 100,
        )
        for i in range(50)
    ]
    for call in calls:
        await next_version(call)
    for _ in range(20):
        await create_member_token(service)
    for call in calls:
        got = await answer(call, 10)
        while isinstance(got, pb.WatchProvidersResponse):
            got = await answer(call, 10)
        assert got.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await eventually(lambda: config.watching == (0, 0))
    assert service.running.registry.all() == []
    assert not errors_logged(caplog)


# ------------------------------------------------------------ versions, reports, bursts


async def test_a_burst_of_changes_reaches_every_stream_in_order_ending_on_the_last(
    service: Service,
) -> None:
    """Thirty concurrent writes: every stream's versions strictly increase and end on the database's revision, with the snapshot of that revision."""
    calls = await open_streams(service, BRIDGE_TOKEN, 10)
    await asyncio.gather(*(create_member_token(service) for _ in range(30)))
    final = await asyncio.to_thread(service.running.db.revision)
    current = await pb_grpc.ConfigServiceStub(service.channel()).GetProviderSnapshot(
        pb.GetProviderSnapshotRequest(), metadata=service.md_for(Role.BRIDGE)
    )
    assert current.snapshot.version == str(final)
    for call in calls:
        seen: list[int] = []
        while not seen or seen[-1] < final:
            response = await asyncio.wait_for(call.read(), 5)
            assert isinstance(response, pb.WatchProvidersResponse)
            seen.append(int(response.snapshot.version))
            last = response.snapshot
        assert seen == sorted(set(seen))
        assert seen[-1] == final
        assert last == current.snapshot
        call.cancel()


async def test_list_subscribers_shows_sent_acked_and_rejected_after_a_change(
    service: Service,
) -> None:
    """After a change ListSubscribers shows the change's version as sent to each stream; an ACK makes it acknowledged, a NACK rejected."""
    stub = pb_grpc.ConfigServiceStub(service.channel())
    acker = watch(service, BRIDGE_TOKEN, node_id="acker")
    nacker = watch(service, service.tokens[Role.PROXY], node_id="nacker")
    await next_version(acker)
    await next_version(nacker)
    await create_member_token(service)
    version = str(service.running.hub.revision)
    assert str(await next_version(acker)) == version
    assert str(await next_version(nacker)) == version
    await stub.ReportStatus(
        pb.ReportStatusRequest(node_id="acker", version=version, applied=True),
        metadata=service.md_for(Role.BRIDGE),
    )
    await stub.ReportStatus(
        pb.ReportStatusRequest(
            node_id="nacker", version=version, applied=False, error_detail="bad"
        ),
        metadata=service.md_for(Role.PROXY),
    )
    listed = await stub.ListSubscribers(
        pb.ListSubscribersRequest(), metadata=service.md_for(Role.OWNER)
    )
    by_node = {s.node_id: s for s in listed.subscribers}
    assert by_node["acker"].version_sent == version
    assert by_node["acker"].version_acked == version
    assert by_node["nacker"].version_sent == version
    assert by_node["nacker"].version_rejected == version
    assert by_node["nacker"].version_acked != version
    acker.cancel()
    nacker.cancel()


async def test_a_resume_at_the_current_version_zero_padded_is_listed_as_the_current_one(
    service: Service,
) -> None:
    """A subscriber resuming at the current revision written with leading zeros is sent nothing and listed in ListSubscribers as sent and acknowledged the current version as the service names it."""
    hub = service.running.hub
    current = hub.version
    call = watch(
        service,
        BRIDGE_TOKEN,
        node_id="padded",
        known_version="000" + current,
        known_history=hub.history,
    )
    registry = service.running.registry
    await eventually(lambda: [s.node_id for s in registry.all()] == ["padded"])
    stub = pb_grpc.ConfigServiceStub(service.channel())
    listed = await stub.ListSubscribers(
        pb.ListSubscribersRequest(), metadata=service.md_for(Role.OWNER)
    )
    (padded,) = listed.subscribers
    assert (padded.version_sent, padded.version_acked) == (current, current)
    call.cancel()


async def test_node_ids_with_nul_or_control_bytes_are_refused(service: Service) -> None:
    """A watch whose node_id holds a NUL or another control character is INVALID_ARGUMENT naming node_id, and holds nothing afterwards."""
    config = service.running.config
    assert config is not None
    for node_id in ("a\x00b", "line\nbreak", "\x1b[31mred", "tab\there", "\x7f"):
        error = await ended_with(watch(service, BRIDGE_TOKEN, node_id=node_id))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, node_id
        assert "node_id" in (error.details() or "")
    assert config.watching == (0, 0)
    assert service.running.registry.all() == []


async def test_ten_thousand_streams_opened_and_closed_leave_nothing_behind(
    start_service: StartService, caplog: pytest.LogCaptureFixture
) -> None:
    """10,000 watch streams opened and closed (a hundred at a time, changes between) leave the servicer's stream and token sets, the registry and the hub's waiters as they were, and no error in the log."""
    service = await start_service(AIBRIDGE_MAX_WATCH_STREAMS_PER_PRINCIPAL="200")
    config = service.running.config
    assert config is not None
    hub = service.running.hub
    waiting = hub.waiting
    auditor = service.tokens[Role.AUDITOR]
    stub = pb_grpc.ConfigServiceStub(service.channel())
    for batch in range(100):
        secret = BRIDGE_TOKEN if batch % 2 else auditor
        calls = [
            stub.WatchProviders(
                pb.WatchProvidersRequest(node_id=f"churn-{batch}-{i}"),
                metadata=Service.md(secret),
            )
            for i in range(100)
        ]
        for call in calls[::2]:
            await next_version(call, 30)
        if batch % 10 == 0:
            await create_member_token(service)
        for call in calls:
            call.cancel()
    await eventually(lambda: config.watching == (0, 0), within=30)
    assert service.running.registry.all() == []
    assert hub.waiting <= max(waiting, 2)  # the revision check and the health follower
    gc.collect()  # an unretrieved future's exception is logged when it is collected
    errors = [
        r.getMessage() + str(r.exc_info) for r in caplog.records if r.levelno >= logging.ERROR
    ]
    assert not errors, errors[:3]


async def test_a_key_added_reaches_only_the_bridge_scope_on_the_fan_out(service: Service) -> None:
    """A provider key added while owner, auditor, proxy and bridge streams are open is in the bridge stream's next snapshot and in no other's (the fan-out sends each scope its own bytes)."""
    calls = {
        role: watch(service, service.tokens[role], node_id=role.value)
        for role in (Role.OWNER, Role.AUDITOR, Role.PROXY, Role.BRIDGE)
    }
    for call in calls.values():
        await next_version(call)
    provider = pa_grpc.ProviderAdminServiceStub(service.channel())
    await provider.CreateProvider(
        pa.CreateProviderRequest(name="p", type=provider_pb2.PROVIDER_TYPE_OPENAI, keys=[SECRET]),
        metadata=service.md_for(Role.OWNER),
    )
    for role, call in calls.items():
        got = await answer(call)
        assert isinstance(got, pb.WatchProvidersResponse)
        assert (SECRET.encode() in got.snapshot.SerializeToString()) is (role is Role.BRIDGE)
        call.cancel()


# ------------------------------------------------------------------ the database lost


async def test_the_database_lost_ends_every_stream_and_back_serves_the_newest(
    database_url: str, tmp_path: Path
) -> None:
    """With PostgreSQL cut off, every open stream ends UNAVAILABLE and new ones are refused; once it is back a new stream gets the database's newest revision, written while this replica was cut off."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite is a local file: there is no connection to cut")
    url = make_url(database_url)
    front = await TcpProxy([(url.host or "127.0.0.1", url.port or 5432)]).start()
    via_front = url.set(host="127.0.0.1", port=front.port).render_as_string(hide_password=False)
    env = base_env(via_front, tmp_path / "cut")
    running = await start(ConfigServiceSettings.from_env(env), env)
    service = Service(running, {Role.BRIDGE: BRIDGE_TOKEN})
    direct = create_engine(database_url)
    try:
        calls = await open_streams(service, BRIDGE_TOKEN, 3)
        await front.cut()  # the periodic revision check (1 s) finds it gone
        for call in calls:
            error = await ended_with(call)
            assert error.code() is grpc.StatusCode.UNAVAILABLE
            assert "cannot reach its database" in (error.details() or "")
        refused = await ended_with(watch(service, BRIDGE_TOKEN))
        assert refused.code() is grpc.StatusCode.UNAVAILABLE
        with direct.begin() as conn:  # another replica's write meanwhile
            conn.execute(text("UPDATE revision SET revision = revision + 1"))
            newest = int(conn.execute(text("SELECT revision FROM revision")).scalar_one())
        await front.restore()
        await eventually(lambda: running.hub.reachable and running.hub.revision == newest)
        (again,) = await open_streams(service, BRIDGE_TOKEN, 1)
        await create_member_token(Service(running, {Role.OWNER: ADMIN_TOKEN}))
        assert await next_version(again) > newest
        again.cancel()
    finally:
        for channel in service.channels:
            await channel.close()
        await running.stop(grace=0)
        await front.close()
        direct.dispose()


# ------------------------------------------------------------------------- tracing


async def test_with_tracing_each_send_of_the_fan_out_is_a_span_under_its_rebuild(
    start_service: StartService, receiver: Receiver
) -> None:
    """With telemetry on, every snapshot a stream gets is one send span naming its node and version: the first a root, each later one a child of the rebuild of that version; no key or token in any span."""
    service = await start_service(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.grpc_endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="grpc"
    )
    provider = pa_grpc.ProviderAdminServiceStub(service.channel())
    await provider.CreateProvider(
        pa.CreateProviderRequest(name="p", type=provider_pb2.PROVIDER_TYPE_OPENAI, keys=[SECRET]),
        metadata=service.md_for(Role.OWNER),
    )
    calls = {
        f"{role.value}-{i}": watch(service, service.tokens[role], node_id=f"{role.value}-{i}")
        for role in (Role.BRIDGE, Role.PROXY)
        for i in range(2)
    }
    seen = {node: [await next_version(call)] for node, call in calls.items()}
    for _ in range(3):
        await create_member_token(service)
        for node, call in calls.items():
            seen[node].append(await next_version(call))
    for call in calls.values():
        call.cancel()
    telemetry = service.running.telemetry
    assert telemetry is not None
    assert await asyncio.to_thread(telemetry.shutdown)

    def sends() -> list[Span]:
        return [s for s in receiver.spans() if s.name == "snapshot send"]

    await eventually(lambda: len(sends()) == sum(len(v) for v in seen.values()))
    rebuilds = {
        s.span_id: s.attributes["aibridge.snapshot.version"]
        for s in receiver.spans()
        if s.name == "snapshot rebuild"
    }
    for node, versions in seen.items():
        mine = sorted(
            (s for s in sends() if s.attributes["aibridge.node_id"] == node),
            key=lambda s: int(s.attributes["aibridge.snapshot.version"]),
        )
        assert [int(s.attributes["aibridge.snapshot.version"]) for s in mine] == versions
        assert not mine[0].parent_id
        for span in mine[1:]:
            assert rebuilds[span.parent_id] == span.attributes["aibridge.snapshot.version"]
    text_of_spans = repr([(s.name, s.attributes) for s in receiver.spans()])
    for secret in (SECRET, *service.tokens.values()):
        assert secret not in text_of_spans
