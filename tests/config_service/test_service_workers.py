"""`aibridge config-service --workers N`: serving processes on one port, each a replica (real processes)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from aibridge.config.v1 import config_service_pb2 as pb
from aibridge.config.v1 import config_service_pb2_grpc as pb_grpc
from aibridge.config.v1 import provider_admin_service_pb2 as pa
from aibridge.config.v1 import provider_admin_service_pb2_grpc as pa_grpc
from aibridge.config.v1 import provider_pb2
from aibridge.config.v1 import token_admin_service_pb2 as tpb
from aibridge.config.v1 import token_admin_service_pb2_grpc as tpb_grpc
from config_service.crypto import Cipher
from config_service.db.engine import make_engine
from config_service.rbac import SYSTEM, Role
from config_service.store import tokens
from config_service.store.database import Database
from tests.fixtures import processes
from tests.fixtures.processes import Proc
from tests.fixtures.services import ADMIN_TOKEN, BRIDGE_TOKEN, Procs, base_env
from tests.fixtures.waits import eventually
from tests.resilience.harness import free_port

ADMIN_MD = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
BRIDGE_MD = (("authorization", f"Bearer {BRIDGE_TOKEN}"),)
# A change reaches the other worker by NOTIFY or the SQLite signal, never by the resync.
SIGNAL_ONLY = {"AIBRIDGE_RESYNC_INTERVAL": "60s"}


def workers(procs: Procs, database_url: str, count: int = 2, **env: str) -> Proc:
    full = base_env(database_url, procs.tmp / "cs") | SIGNAL_ONLY | env
    full |= {"AIBRIDGE_WORKERS": str(count), "AIBRIDGE_REPLICA_ID": "cs"}
    proc = procs.start("config-service", ["config-service"], full, "workers ready")
    proc.ready["target"] = proc.target
    return proc


@dataclass
class Conn:
    """One TCP connection to the service (its own subchannel pool), so on one worker."""

    channel: grpc.Channel
    node_id: str
    stream: Iterator[pb.WatchProvidersResponse]
    versions: list[str]
    replica: str = ""

    def until(self, version: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.versions or int(self.versions[-1]) < int(version):
            assert time.monotonic() < deadline, f"never saw {version}; saw {self.versions}"
            self.versions.append(next(self.stream).snapshot.version)
        assert self.versions[-1] == version, self.versions


def connect(proc: Proc, node_id: str, metadata: tuple[tuple[str, str], ...] = BRIDGE_MD) -> Conn:
    channel = grpc.insecure_channel(proc.target, options=[("grpc.use_local_subchannel_pool", 1)])
    stream = pb_grpc.ConfigServiceStub(channel).WatchProviders(
        pb.WatchProvidersRequest(node_id=node_id), metadata=metadata
    )
    conn = Conn(channel, node_id, stream, [])
    conn.versions.append(next(stream).snapshot.version)
    return conn


def subscribers(channel: grpc.Channel) -> dict[str, str]:
    """Node id -> replica id of every stream ListSubscribers lists (through `channel`)."""
    response = pb_grpc.ConfigServiceStub(channel).ListSubscribers(
        pb.ListSubscribersRequest(), metadata=ADMIN_MD, timeout=10
    )
    return {s.node_id: s.replica_id for s in response.subscribers}


@pytest.fixture
def procs_and_conns(procs: Procs) -> Iterator[tuple[Procs, list[Conn]]]:
    conns: list[Conn] = []
    yield procs, conns
    for conn in conns:
        conn.stream.cancel()  # type: ignore[attr-defined]
        conn.channel.close()


def on_both_workers(
    proc: Proc, conns: list[Conn], metadata: tuple[tuple[str, str], ...] = BRIDGE_MD
) -> dict[str, Conn]:
    """Connections until both workers hold some, each labelled with its replica id (as
    ListSubscribers, through any worker, reports it); one connection per replica id."""
    by_replica: dict[str, Conn] = {}
    mine: list[Conn] = []
    for i in range(40):
        mine.append(connect(proc, f"probe-{len(conns)}", metadata))
        conns.append(mine[-1])
        if i % 4 == 3 or i == 39:
            # Every worker publishes its streams to the shared table once a second.
            def labelled() -> bool:
                listed = subscribers(mine[-1].channel)
                return all(c.node_id in listed for c in mine)

            asyncio.run(eventually(labelled, within=10))
            listed = subscribers(mine[-1].channel)
            for c in mine:
                c.replica = listed[c.node_id]
                by_replica.setdefault(c.replica, c)
            if len(by_replica) == 2:
                return by_replica
    raise AssertionError(f"40 connections all landed on {set(by_replica)}")


def create_provider(channel: grpc.Channel, name: str) -> None:
    pa_grpc.ProviderAdminServiceStub(channel).CreateProvider(
        pa.CreateProviderRequest(
            name=name, type=provider_pb2.PROVIDER_TYPE_OPENAI, keys=["sk-workers-0123456789abcdef"]
        ),
        metadata=ADMIN_MD,
        timeout=10,
    )


def version_on(channel: grpc.Channel) -> str:
    response = pb_grpc.ConfigServiceStub(channel).GetProviderSnapshot(
        pb.GetProviderSnapshotRequest(), metadata=BRIDGE_MD, timeout=10
    )
    return str(response.snapshot.version)


def test_a_write_through_either_worker_reaches_the_streams_of_both(
    database_url: str, procs_and_conns: tuple[Procs, list[Conn]]
) -> None:
    """Streams land on both workers (distinct replica ids), and a provider created through either worker reaches every stream without a resync."""
    procs, conns = procs_and_conns
    proc = workers(procs, database_url)
    by_replica = on_both_workers(proc, conns)
    assert set(by_replica) == {"cs-w0", "cs-w1"}
    for replica, writer in sorted(by_replica.items()):
        create_provider(writer.channel, f"made-on-{replica.replace('cs-', '')}")
        version = version_on(writer.channel)
        for conn in conns:
            conn.until(version, timeout=5)
        assert {version_on(c.channel) for c in by_replica.values()} == {version}


def test_health_and_reflection_answer_on_every_worker(
    database_url: str, procs_and_conns: tuple[Procs, list[Conn]]
) -> None:
    """Each worker answers health SERVING and lists the services through reflection."""
    procs, conns = procs_and_conns
    proc = workers(procs, database_url)
    for conn in on_both_workers(proc, conns).values():
        health = health_pb2_grpc.HealthStub(conn.channel).Check(
            health_pb2.HealthCheckRequest(service="aibridge.config.v1.ConfigService"), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        answers = reflection_pb2_grpc.ServerReflectionStub(conn.channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for s in next(answers).list_services_response.service}
        assert "aibridge.config.v1.ConfigService" in names


def test_a_revoked_token_ends_its_streams_on_every_worker(
    database_url: str, procs_and_conns: tuple[Procs, list[Conn]]
) -> None:
    """A bridge token revoked through one worker ends its streams on both with UNAUTHENTICATED; other streams stay."""
    procs, conns = procs_and_conns
    proc = workers(procs, database_url)
    bystanders = on_both_workers(proc, conns)
    db = Database(make_engine(database_url), Cipher(()))
    try:  # bridge-role tokens are minted on the database (CreateToken refuses them)
        view, secret = tokens.create_token(db, SYSTEM, "fleet", Role.BRIDGE)
    finally:
        db.engine.dispose()
    # A write through one worker: both reload (the other by the signal) and know the token.
    writer = bystanders["cs-w0"]
    create_provider(writer.channel, "after-token")
    version = version_on(writer.channel)
    for conn in bystanders.values():
        conn.until(version)
    fleet = on_both_workers(proc, conns, (("authorization", f"Bearer {secret}"),))
    tpb_grpc.TokenAdminServiceStub(bystanders["cs-w1"].channel).RevokeToken(
        tpb.RevokeTokenRequest(id=view.id), metadata=ADMIN_MD, timeout=10
    )
    after = version_on(bystanders["cs-w1"].channel)
    for conn in fleet.values():
        with pytest.raises(grpc.RpcError) as ended:
            conn.until(after, timeout=5)
        assert ended.value.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    for conn in bystanders.values():
        conn.until(after)


def test_a_killed_worker_is_replaced_and_sigterm_stops_every_process(
    database_url: str, procs: Procs
) -> None:
    """A SIGKILLed worker is started again and serves; SIGTERM to the parent ends it and every worker, exit 0."""
    proc = workers(procs, database_url)
    first, second = proc.ready["pids"]
    os.kill(first, signal.SIGKILL)

    def replaced() -> bool:
        return any(r["pid"] not in (first, second) for r in proc.events("worker ready"))

    asyncio.run(eventually(replaced, within=30))
    (third,) = {r["pid"] for r in proc.events("worker ready")} - {first, second}
    assert proc.events("worker exited; starting another")[0]["status"] == "killed by SIGKILL"
    for _ in range(8):  # fresh connections: both workers answer
        with grpc.insecure_channel(
            proc.target, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            assert version_on(channel)
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.popen.wait(timeout=30) == 0
    for pid in (second, third):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_metrics_on_any_worker_count_every_workers_streams(
    database_url: str, procs_and_conns: tuple[Procs, list[Conn]]
) -> None:
    """/metrics on the shared port, whichever worker answers, sums the bridge streams of both and names the worker that rendered it."""
    procs, conns = procs_and_conns
    port = free_port()
    proc = workers(procs, database_url, AIBRIDGE_METRICS_LISTEN=f"127.0.0.1:{port}")
    on_both_workers(proc, conns)
    rendered_by: set[str] = set()

    def both_counted() -> bool:
        # A fresh connection per scrape, so the kernel may hand it to either worker.
        page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        rendered_by.update(re.findall(r'aibridge_config_worker_info\{pid="(\d+)"', page))
        return f'aibridge_config_subscribers{{role="bridge"}} {float(len(conns))}' in page

    asyncio.run(eventually(both_counted, within=10))
    for _ in range(20):
        if len(rendered_by) == 2:
            break
        both_counted()
    assert rendered_by == {str(pid) for pid in proc.ready["pids"]}


def test_a_seeding_conflict_ends_the_workers_parent_before_any_worker_starts(
    database_url: str, procs: Procs
) -> None:
    """The parent seeds once: a provider whose env base URL differs from the database is listed and ends the command with 2, no worker started."""
    env = base_env(database_url, procs.tmp / "cs") | {
        "AIBRIDGE_OPENAI_KEY": "sk-workers-seed-0123456789abcdef",
        "AIBRIDGE_OPENAI_BASE_URL": "https://one.example/v1/",
    }
    procs.start("config-service", ["config-service"], env, "config service ready").stop()
    env |= {"AIBRIDGE_OPENAI_BASE_URL": "https://two.example/v1/", "AIBRIDGE_WORKERS": "2"}
    proc = processes.popen(["config-service"], env)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, stderr
    assert "seeding providers from the environment failed" in stderr
    assert "openai" in stderr
    assert "worker ready" not in stderr
