"""Fault injection with real processes: config service killed and restarted, bridge
restarted from its cache, database cut, replica death; every stream checked."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Self

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import provider_pb2 as pb
from aibridge.config.v1 import token_admin_service_pb2 as tpb
from aibridge.config.v1 import token_pb2
from tests.fixtures.databases import schema_url
from tests.fixtures.upstream import FakeUpstream
from tests.fixtures.waits import eventually
from tests.resilience.harness import (
    PROXY_MD,
    Admin,
    Proc,
    Procs,
    StreamRecorder,
    TcpProxy,
    bridge_url,
    database_revision,
    free_port,
    health_is,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

POOL_KEY = "sk-resilience-pool-key-0000000000000000"
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


class Loop:
    """A coroutine `_run` in the background from `start` until `stop` (again: a no-op)."""

    _task: asyncio.Task[None] | None = None

    def start(self) -> Self:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass
class Traffic(Loop):
    """A client loop through the bridge; every non-200 answer or error is kept."""

    url: str
    token: str
    ok: int = 0
    failures: list[str] = field(default_factory=list)

    async def _run(self) -> None:
        headers = {"authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10) as http:
            while True:
                try:
                    response = await http.post("/openai/v1/chat/completions", json=CHAT)
                    if response.status_code == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"{response.status_code} {response.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                await asyncio.sleep(0.005)  # pace: steady traffic, not a flood


async def readyz(proc: Proc) -> tuple[int, str]:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(bridge_url(proc) + "/readyz")
        return response.status_code, str(response.json().get("version", ""))


async def on_version(proc: Proc, version: int) -> bool:
    status, current = await readyz(proc)
    return status == 200 and current == str(version)


async def acked(admin: Admin, nodes: list[str], version: int, replica: str = "") -> bool:
    """Whether each node has a stream (held by `replica`, if given) that acknowledged `version`.

    On PostgreSQL a killed replica's last published streams stay listed for the freshness
    window, possibly with an older ACK: a node can be listed twice, so no node-keyed dict.
    """
    try:
        listed = await admin.config.ListSubscribers(
            cs.ListSubscribersRequest(), metadata=admin.md, timeout=10
        )
    except grpc.aio.AioRpcError:
        return False
    done = {
        s.node_id
        for s in listed.subscribers
        if s.version_acked == str(version) and replica in ("", s.replica_id)
    }
    return set(nodes) <= done


async def seed_stack(admin: Admin, upstream: FakeUpstream) -> str:
    await admin.create_provider(
        "openai", pb.PROVIDER_TYPE_OPENAI, upstream.url + "/v1/", [POOL_KEY]
    )
    return await admin.create_token("alice")


def applied_versions(proc: Proc) -> list[int]:
    return [int(r["version"]) for r in proc.events("snapshot applied")]


async def last_write(admin: Admin, bridge: Proc, replica: str = "") -> int:
    """One more write through `admin`; returns its revision once the bridge has applied and
    acknowledged it (to `replica`, if given)."""
    await admin.create_token(f"last-write-{replica or 'any'}")
    final = await admin.version()
    await eventually(lambda: on_version(bridge, final), within=5)
    await eventually(lambda: acked(admin, ["bridge-1"], final, replica), within=5)
    return final


def assert_only_forward(bridge: Proc, final: int) -> list[int]:
    """The versions the bridge applied, each once, in order, ending at `final`."""
    seen = applied_versions(bridge)
    assert seen == sorted(set(seen)) and seen[-1] == final, seen
    return seen


async def end_run(traffic: Traffic | None, *closing: Callable[[], Awaitable[object]]) -> None:
    """Stop the traffic (if it started), then each of `closing`, in order."""
    if traffic is not None:
        await traffic.stop()
    for close in closing:
        await close()


def assert_served(traffic: Traffic | None) -> None:
    """The traffic ran and no request of it failed."""
    assert traffic is not None and not traffic.failures, traffic and traffic.failures[:5]


async def assert_ended_forward(
    bridge: Proc, final: int, database_url: str, traffic: Traffic | None
) -> list[int]:
    """`final` is the database's revision, the traffic served, and the bridge only moved
    forward to `final`: the versions it applied."""
    assert final == await asyncio.to_thread(database_revision, database_url)
    assert_served(traffic)
    return assert_only_forward(bridge, final)


async def restartable_config_service(procs: Procs, database_url: str) -> tuple[Proc, int, str]:
    """A config service on a free port a restart can take again: the process, port and target."""
    port = free_port()
    service = await asyncio.to_thread(procs.config_service, database_url, port)
    return service, port, service.ready["target"]


async def cached_bridge(procs: Procs, target: str, cache: Path) -> Proc:
    """bridge-1 subscribed to `target`, keeping its snapshot cache at `cache`."""
    return await asyncio.to_thread(
        procs.bridge, target, "bridge-1", AIBRIDGE_SNAPSHOT_CACHE=str(cache)
    )


async def test_config_service_killed_under_traffic(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str, tmp_path: Path
) -> None:
    """SIGKILL and restart of the config service under steady bridge traffic loses no request and the bridge and proxy are back on the current version within about a second."""
    first, port, target = await restartable_config_service(procs, sqlite_url)
    admin = Admin(target)
    member = await seed_stack(admin, upstream)
    bridge = await cached_bridge(procs, target, tmp_path / "bridge-cache.pb")
    proxy = await asyncio.to_thread(procs.proxy, target, bridge_url(bridge), "proxy-1")
    bridge_rec = StreamRecorder(target, node_id="rec-bridge").start()
    proxy_rec = StreamRecorder(
        target, PROXY_MD, cs.SNAPSHOT_SCOPE_PROXY, node_id="rec-proxy"
    ).start()
    traffic = None
    try:
        version = await admin.version()
        await eventually(lambda: on_version(bridge, version))
        traffic = Traffic(bridge_url(bridge), member).start()
        await eventually(lambda: traffic.ok >= 10)
        await admin.create_token("before-kill")
        version = await admin.version()
        await eventually(lambda: acked(admin, ["bridge-1", "proxy-1"], version), within=5)

        first.kill()
        await asyncio.sleep(0.5)  # a window: traffic keeps flowing with no config service
        served_while_down = traffic.ok
        second = await asyncio.to_thread(procs.config_service, sqlite_url, port)
        restarted = time.monotonic()
        await admin.close()
        admin = Admin(target)
        back = await eventually(
            lambda: acked(admin, ["bridge-1", "proxy-1"], version), within=10, every=0.01
        )
        await admin.create_token("after-restart")
        new_version = await admin.version()
        await eventually(lambda: on_version(bridge, new_version), within=5, every=0.01)
        caught_up = time.monotonic() - restarted
        await eventually(lambda: acked(admin, ["bridge-1", "proxy-1"], new_version), within=5)
        await eventually(lambda: traffic.ok > served_while_down + 10)
        final = database_revision(sqlite_url)
        assert final == new_version
        await bridge_rec.wait_for(str(final))
        await proxy_rec.wait_for(str(final))
    finally:
        await end_run(traffic, bridge_rec.stop, proxy_rec.stop, admin.close)
    assert second.popen.poll() is None
    assert_served(traffic)
    assert back < 1.5, f"subscribers took {back:.2f}s to resubscribe after the restart"
    assert caught_up < 2.0, f"bridge on the new version {caught_up:.2f}s after the restart"
    bridge_rec.check(final)
    proxy_rec.check(final)
    assert bridge_rec.reconnects >= 1 and proxy_rec.reconnects >= 1
    for daemon in (bridge, proxy):
        seen = applied_versions(daemon)
        assert seen == sorted(seen) and seen[-1] == final, seen


async def test_bridge_restarted_while_config_service_down_serves_from_cache(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str, tmp_path: Path
) -> None:
    """A bridge started while the config service is down serves its AIBRIDGE_SNAPSHOT_CACHE snapshot and resumes from it when the service returns."""
    first, port, target = await restartable_config_service(procs, sqlite_url)
    admin = Admin(target)
    try:
        member = await seed_stack(admin, upstream)
        version = await admin.version()
    finally:
        await admin.close()
    cache = tmp_path / "bridge-cache.pb"
    bridge = await cached_bridge(procs, target, cache)
    await eventually(lambda: on_version(bridge, version))
    await eventually(cache.exists)
    first.kill()
    bridge.kill()

    again = await cached_bridge(procs, target, cache)
    assert await readyz(again) == (200, str(version))
    headers = {"authorization": f"Bearer {member}"}
    async with httpx.AsyncClient(base_url=bridge_url(again), headers=headers) as http:
        for _ in range(5):
            response = await http.post("/openai/v1/chat/completions", json=CHAT)
            assert response.status_code == 200, response.text
    assert upstream.seen[-1].headers["authorization"] == f"Bearer {POOL_KEY}"

    await asyncio.to_thread(procs.config_service, sqlite_url, port)
    admin = Admin(target)
    try:
        await eventually(lambda: acked(admin, ["bridge-1"], version))
        await admin.create_token("after")
        new_version = await admin.version()
        await eventually(lambda: on_version(again, new_version), within=5)
    finally:
        await admin.close()
    seen = applied_versions(again)
    assert seen == [version, new_version], seen


async def test_bridge_is_back_about_a_second_after_a_long_outage(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str
) -> None:
    """After 8 s with the config service unreachable the bridge still retries about every second, and is on the new version about a second after the service is reachable again."""
    service = await asyncio.to_thread(procs.config_service, sqlite_url)
    target = service.ready["target"]
    admin = Admin(target)
    front = await TcpProxy([("127.0.0.1", int(target.rsplit(":", 1)[1]))]).start()
    try:
        await seed_stack(admin, upstream)
        bridge = await asyncio.to_thread(procs.bridge, front.address, "bridge-1")
        before = await admin.version()
        await eventually(lambda: on_version(bridge, before))
        # The outage: every connection through the front is accepted, then reset.
        front.targets = [("127.0.0.1", free_port())]
        await front.cut()
        await front.restore()
        outage = time.monotonic()
        await admin.create_token("during-the-outage")
        version = await admin.version()
        await asyncio.sleep(8.0)  # a window: the outage lasts; the bridge keeps retrying
        front.targets = [("127.0.0.1", int(target.rsplit(":", 1)[1]))]
        back = await eventually(lambda: on_version(bridge, version), within=15, every=0.01)
        attempts = [t for t in front.accepted if t > outage]
    finally:
        await admin.close()
        await front.close()
    late = [t for t in attempts if t > outage + 4.0]
    gaps = [after - before for before, after in itertools.pairwise(late)]
    assert len(late) >= 3 and max(gaps) < 1.5, f"reconnect gaps late in the outage: {gaps}"
    assert back < 2.0, f"bridge on the new version {back:.2f}s after the service was back"


# ------------------------------------------------------------------------ database cut


@dataclass
class Writer(Loop):
    """Creates tokens in a loop; keeps the names acknowledged and how each failure looked."""

    admin: Admin
    acked: list[str] = field(default_factory=list)
    failed: list[tuple[str, float]] = field(default_factory=list)  # (code, seconds)
    _n: int = 0

    async def _run(self) -> None:
        while True:
            self._n += 1
            name = f"w-{self._n}"
            started = time.monotonic()
            try:
                await self.admin.create_token(name)
                self.acked.append(name)
            except grpc.aio.AioRpcError as exc:
                self.failed.append((exc.code().name, time.monotonic() - started))
            await asyncio.sleep(0.02)  # pace: a steady writer


def principals_in(database_url: str) -> set[str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return {str(n) for n in conn.execute(text("SELECT name FROM principals")).scalars()}
    finally:
        engine.dispose()


class CuttableDatabase(NamedTuple):
    """A test schema's URL, a TCP front to its server that a test can cut and restore, and
    the schema's URL through that front."""

    direct: str
    front: TcpProxy
    via_front: str


async def cuttable_database(pg_schema: tuple[str, str]) -> CuttableDatabase:
    """The test schema reachable directly and through a front that can be cut."""
    base, schema = pg_schema
    url = make_url(base)
    front = await TcpProxy([(url.host or "127.0.0.1", url.port or 5432)]).start()
    return CuttableDatabase(schema_url(base, schema), front, schema_url(base, schema, front.port))


async def test_database_unreachable(
    procs: Procs, pg_schema: tuple[str, str], upstream: FakeUpstream
) -> None:
    """With PostgreSQL cut off, health goes NOT_SERVING, streams end UNAVAILABLE, writes fail fast with UNAVAILABLE, the bridge keeps its last snapshot, recovery is automatic and every acknowledged write survives."""
    direct, db_proxy, via_proxy = await cuttable_database(pg_schema)
    service = await asyncio.to_thread(
        procs.config_service, via_proxy, 0, "cs", AIBRIDGE_RESYNC_INTERVAL="1s"
    )
    target = service.ready["target"]
    admin = Admin(target)
    member = await seed_stack(admin, upstream)
    bridge = await asyncio.to_thread(procs.bridge, target, "bridge-1")
    recorder = StreamRecorder(target).start()
    writer = Writer(admin)
    try:
        version = await admin.version()
        await eventually(lambda: on_version(bridge, version))
        writer.start()
        await eventually(lambda: len(writer.acked) >= 5)
        await db_proxy.cut()
        cut_at = len(writer.failed)
        await eventually(lambda: len(writer.failed) >= cut_at + 3, within=30)
        # While the database is away the replica says so and vouches for no snapshot:
        # health NOT_SERVING, open streams ended, new ones and reads refused; the bridge
        # keeps serving its last snapshot.
        await eventually(lambda: health_is(target, NOT_SERVING), within=10)
        await eventually(lambda: "UNAVAILABLE" in recorder.errors, within=5)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await admin.snapshot(PROXY_MD)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "cannot reach its database" in (refused.value.details() or "")
        headers = {"authorization": f"Bearer {member}"}
        async with httpx.AsyncClient(base_url=bridge_url(bridge), headers=headers) as http:
            response = await http.post("/openai/v1/chat/completions", json=CHAT)
            assert response.status_code == 200
        acked_before_restore = len(writer.acked)
        await db_proxy.restore()
        await eventually(lambda: health_is(target, SERVING), within=10)
        recovered = await eventually(
            lambda: len(writer.acked) >= acked_before_restore + 3, within=20
        )
        await writer.stop()
        final = await asyncio.to_thread(database_revision, direct)
        await recorder.wait_for(str(final), within=10)
        await eventually(lambda: on_version(bridge, final), within=10)
    finally:
        with contextlib.suppress(AssertionError):
            await writer.stop()
        await recorder.stop()
        await admin.close()
        await db_proxy.close()
    during_cut = writer.failed[cut_at:]
    assert {code for code, _ in during_cut} == {"UNAVAILABLE"}, during_cut
    assert max(seconds for _, seconds in during_cut) < 10, during_cut
    assert recovered < 15
    missing = set(writer.acked) - await asyncio.to_thread(principals_in, direct)
    assert not missing, f"acknowledged writes lost: {sorted(missing)}"
    recorder.check(final)


# ------------------------------------------------------------------------ replica death


async def test_replica_dies_subscriber_resumes_on_the_other(
    procs: Procs, pg_url: str, upstream: FakeUpstream
) -> None:
    """When the replica a bridge follows is killed, the bridge (through a failover TCP front) resumes on the other replica with known_version and no version goes backwards."""
    a = await asyncio.to_thread(procs.config_service, pg_url, 0, "a", AIBRIDGE_REPLICA_ID="a")
    b = await asyncio.to_thread(procs.config_service, pg_url, 0, "b", AIBRIDGE_REPLICA_ID="b")
    a_port = int(a.ready["target"].rsplit(":", 1)[1])
    b_port = int(b.ready["target"].rsplit(":", 1)[1])
    front = await TcpProxy([("127.0.0.1", a_port), ("127.0.0.1", b_port)]).start()
    admin_a, admin_b = Admin(a.ready["target"]), Admin(b.ready["target"])
    member = await seed_stack(admin_a, upstream)
    bridge = await asyncio.to_thread(procs.bridge, front.address, "bridge-1")
    recorder = StreamRecorder(front.address).start()
    traffic = None
    try:
        version = await admin_a.version()
        await eventually(lambda: acked(admin_a, ["bridge-1"], version))
        traffic = Traffic(bridge_url(bridge), member).start()
        for name in ("one", "two"):
            await admin_a.create_token(name)
        version = await admin_a.version()
        await eventually(lambda: acked(admin_a, ["bridge-1"], version))
        a.kill()
        await eventually(lambda: acked(admin_b, ["bridge-1"], version, "b"), within=10)
        final = await last_write(admin_b, bridge, "b")
        await recorder.wait_for(str(final))
    finally:
        await end_run(traffic, recorder.stop, admin_a.close, admin_b.close, front.close)
    seen = await assert_ended_forward(bridge, final, pg_url, traffic)
    recorder.check(final)
    # Resumed with known_version: the version it already had was not sent again.
    assert seen.count(version) == 1
    resumed = [r for r in bridge.events("following the config service")]
    assert any(r.get("known_version") == str(version) for r in resumed), resumed


async def test_bridge_moved_to_a_replica_cut_off_from_the_database_never_goes_back(
    procs: Procs, pg_schema: tuple[str, str], upstream: FakeUpstream
) -> None:
    """A bridge moved from replica A onto replica B, whose database is cut off (B stuck at an older version), is refused there (UNAVAILABLE, B's health NOT_SERVING) and never applies the older version; once B reaches the database again the bridge resumes on B and moves forward."""
    direct, db_proxy, via_proxy = await cuttable_database(pg_schema)
    a = await asyncio.to_thread(procs.config_service, direct, 0, "a", AIBRIDGE_REPLICA_ID="a")
    # A long resync interval: B learns of its cut only when a subscriber needs it.
    b = await asyncio.to_thread(
        procs.config_service,
        via_proxy,
        0,
        "b",
        AIBRIDGE_REPLICA_ID="b",
        AIBRIDGE_RESYNC_INTERVAL="60s",
    )
    a_target, b_target = a.ready["target"], b.ready["target"]
    front = await TcpProxy([("127.0.0.1", int(a_target.rsplit(":", 1)[1]))]).start()
    admin_a, admin_b = Admin(a_target), Admin(b_target)
    traffic = None
    try:
        member = await seed_stack(admin_a, upstream)
        bridge = await asyncio.to_thread(procs.bridge, front.address, "bridge-1")

        async def b_caught_up() -> bool:
            return await admin_b.version() == await admin_a.version()

        await eventually(b_caught_up)
        await db_proxy.cut()
        stale = await admin_b.version()
        await admin_a.create_token("after-the-cut")
        await admin_a.create_token("revoked-soon")
        version = await admin_a.version()
        assert version > stale
        await eventually(lambda: on_version(bridge, version))
        traffic = Traffic(bridge_url(bridge), member).start()

        failures = len(bridge.events("config service stream failed"))
        front.targets = [("127.0.0.1", int(b_target.rsplit(":", 1)[1]))]
        await front.cut()
        await front.restore()
        # Lost A (one failure), then refused by B at least twice; or (the defect) B's
        # older snapshot applied.
        await eventually(
            lambda: (
                len(bridge.events("config service stream failed")) >= failures + 3
                or applied_versions(bridge)[-1] != version
            ),
            within=15,
        )
        seen = applied_versions(bridge)
        assert seen == sorted(set(seen)), f"the bridge went back in time: {seen}"
        assert await on_version(bridge, version)
        assert await health_is(b_target, NOT_SERVING)
        refusals = bridge.events("config service stream failed")[failures + 1 :]
        assert {r["code"] for r in refusals} == {"UNAVAILABLE"}, refusals
        assert all("cannot reach its database" in r["detail"] for r in refusals), refusals
        await admin_a.create_token("while-b-is-cut")

        await db_proxy.restore()
        await eventually(lambda: health_is(b_target, SERVING), within=10)
        caught_up = await admin_a.version()
        await eventually(lambda: on_version(bridge, caught_up), within=10)
        final = await last_write(admin_b, bridge)
    finally:
        await end_run(traffic, admin_a.close, admin_b.close, front.close, db_proxy.close)
    seen = await assert_ended_forward(bridge, final, direct, traffic)
    assert stale not in seen[seen.index(version) :], seen


@pytest.mark.slow
async def test_config_service_killed_repeatedly(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str
) -> None:
    """Ten kill/restart cycles with writes in between never fail a client request nor move a version backwards."""
    service, port, target = await restartable_config_service(procs, sqlite_url)
    admin = Admin(target)
    member = await seed_stack(admin, upstream)
    bridge = await asyncio.to_thread(procs.bridge, target, "bridge-1")
    recorder = StreamRecorder(target).start()
    traffic = Traffic(bridge_url(bridge), member).start()
    try:
        for cycle in range(10):
            await admin.create_token(f"cycle-{cycle}")
            version = await admin.version()
            await eventually(lambda v=version: on_version(bridge, v), within=5)
            service.kill()
            await asyncio.sleep(0.2 * (cycle % 3))  # a window: outages of varied length
            service = await asyncio.to_thread(procs.config_service, sqlite_url, port)
            await admin.close()
            admin = Admin(target)
        final = database_revision(sqlite_url)
        await eventually(lambda: acked(admin, ["bridge-1"], final), within=10)
        await recorder.wait_for(str(final))
    finally:
        await traffic.stop()
        await recorder.stop()
        await admin.close()
    assert not traffic.failures, traffic.failures[:5]
    recorder.check(final)
    seen = applied_versions(bridge)
    assert seen == sorted(seen), seen


async def test_database_silently_partitioned(
    procs: Procs, pg_schema: tuple[str, str], upstream: FakeUpstream
) -> None:
    """With PostgreSQL silently unreachable (packets swallowed, no reset), an admin write still fails with UNAVAILABLE within 10 s and the service recovers once the network is back."""
    _, db_proxy, via_proxy = await cuttable_database(pg_schema)
    service = await asyncio.to_thread(procs.config_service, via_proxy, 0, "cs")
    admin = Admin(service.ready["target"])
    recorder = StreamRecorder(service.ready["target"]).start()
    try:
        await seed_stack(admin, upstream)
        await recorder.wait_for(str(await admin.version()))
        db_proxy.blackholed = True
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await admin.tokens.CreateToken(
                tpb.CreateTokenRequest(principal_name="partitioned", role=token_pb2.ROLE_MEMBER),
                metadata=admin.md,
                timeout=12,
            )
        elapsed = time.monotonic() - started
        db_proxy.blackholed = False
        await eventually(lambda: writes_again(admin), within=30)
    finally:
        await recorder.stop()
        await admin.close()
        await db_proxy.close()
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value
    assert elapsed < 10, f"write failed after {elapsed:.1f}s"
    recorder.check()


async def writes_again(admin: Admin) -> bool:
    try:
        await admin.create_token(f"probe-{time.monotonic_ns()}")
    except grpc.aio.AioRpcError:
        return False
    return True
