"""Several config-service replicas on one PostgreSQL database (real processes)."""

from __future__ import annotations

import asyncio
import secrets
import time

import grpc
import pytest
from sqlalchemy import create_engine, text

from aibridge.config.v1 import config_service_pb2 as pb
from aibridge.config.v1 import config_service_pb2_grpc as pb_grpc
from aibridge.config.v1 import provider_admin_service_pb2 as pa
from aibridge.config.v1 import provider_admin_service_pb2_grpc as pa_grpc
from aibridge.config.v1 import provider_pb2, token_pb2
from aibridge.config.v1 import token_admin_service_pb2 as tpb
from aibridge.config.v1 import token_admin_service_pb2_grpc as tpb_grpc
from config_service.crypto import Cipher
from config_service.db.engine import make_engine
from config_service.rbac import SYSTEM, Role
from config_service.store import tokens
from config_service.store.database import Database
from tests.fixtures.processes import Proc
from tests.fixtures.services import ADMIN_TOKEN, BRIDGE_TOKEN, StartProcess
from tests.fixtures.waits import eventually

ADMIN_MD = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
BRIDGE_MD = (("authorization", f"Bearer {BRIDGE_TOKEN}"),)


@pytest.fixture
def postgres_only(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("replicas share a PostgreSQL database")
    return database_url


def create_token(proc: Proc, name: str) -> None:
    with grpc.insecure_channel(proc.target) as channel:
        tpb_grpc.TokenAdminServiceStub(channel).CreateToken(
            tpb.CreateTokenRequest(principal_name=name, role=token_pb2.ROLE_MEMBER),
            metadata=ADMIN_MD,
            timeout=10,
        )


def create_provider(proc: Proc, name: str) -> None:
    with grpc.insecure_channel(proc.target) as channel:
        pa_grpc.ProviderAdminServiceStub(channel).CreateProvider(
            pa.CreateProviderRequest(
                name=name,
                type=provider_pb2.PROVIDER_TYPE_OPENAI,
                keys=["sk-replica-0123456789abcdefgh"],
            ),
            metadata=ADMIN_MD,
            timeout=10,
        )


def version_of(proc: Proc) -> str:
    with grpc.insecure_channel(proc.target) as channel:
        response = pb_grpc.ConfigServiceStub(channel).GetProviderSnapshot(
            pb.GetProviderSnapshotRequest(), metadata=BRIDGE_MD, timeout=10
        )
    return response.snapshot.version


class Watcher:
    """A WatchProviders stream on one replica, read with a deadline."""

    def __init__(self, proc: Proc, metadata: tuple[tuple[str, str], ...] = BRIDGE_MD) -> None:
        self.channel = grpc.insecure_channel(proc.target)
        self.stream = pb_grpc.ConfigServiceStub(self.channel).WatchProviders(
            pb.WatchProvidersRequest(node_id="replica-test"), metadata=metadata
        )
        self.versions: list[str] = []
        self.last: pb.ProviderSnapshot | None = None

    def until(self, version: str, timeout: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while not self.versions or self.versions[-1] != version:
            assert time.monotonic() < deadline, f"never saw {version}; saw {self.versions}"
            # Past the version awaited, the stream would block on a version that never comes.
            assert not self.versions or int(self.versions[-1]) < int(version), (
                f"went past {version}; saw {self.versions}"
            )
            self.last = next(self.stream).snapshot
            self.versions.append(self.last.version)
        return self.versions

    def close(self) -> None:
        self.stream.cancel()
        self.channel.close()


def replicas(start_process: StartProcess, *ids: str, **env: str) -> list[Proc]:
    """One config service process per replica id, each with `env`."""
    return [start_process(AIBRIDGE_REPLICA_ID=i, **env) for i in ids]


# A resync only every minute: a change reaches another replica by NOTIFY, not by resync.
NOTIFY_ONLY = {"AIBRIDGE_RESYNC_INTERVAL": "60s"}


def last_provider_names(watcher: Watcher) -> set[str]:
    """The provider names of the last snapshot the watcher saw."""
    assert watcher.last is not None
    return {p.name for p in watcher.last.providers}


def test_write_on_one_replica_reaches_subscribers_of_the_other(
    postgres_only: str, start_process: StartProcess
) -> None:
    """A provider created through replica A is on a stream of replica B, with the version both report."""
    a, b = replicas(start_process, "replica-a", "replica-b", **NOTIFY_ONLY)
    watcher = Watcher(b)
    try:
        watcher.until(version_of(b))
        started = time.monotonic()
        create_provider(a, "made-on-a")
        new_version = version_of(a)
        watcher.until(new_version, timeout=2)
        assert time.monotonic() - started < 2
        assert "made-on-a" in last_provider_names(watcher)
        assert version_of(b) == new_version
    finally:
        watcher.close()


def test_replica_resyncs_after_losing_its_database_connection(
    postgres_only: str, start_process: StartProcess
) -> None:
    """Killing replica B's listener connection loses no change: B re-listens and resyncs."""
    # A name of this test's own: other runs on the same server have their replica-b too.
    replica_b = f"replica-b-{secrets.token_hex(4)}"
    a, b = replicas(start_process, "replica-a", replica_b, **NOTIFY_ONLY)
    watcher = Watcher(b)
    admin = create_engine(postgres_only.split("?")[0], isolation_level="AUTOCOMMIT")
    try:
        watcher.until(version_of(b))
        with admin.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": f"aibridge-listener-{replica_b}"},
            ).scalar_one()
        assert killed == 1
        # Written while B has no listener: only the resync after reconnecting can catch it.
        create_token(a, "bob")
        create_provider(a, "while-b-was-deaf")
        final = version_of(a)
        seen = watcher.until(final, timeout=5)
        assert [int(v) for v in seen] == sorted(int(v) for v in seen)
        assert version_of(b) == final
        assert "while-b-was-deaf" in last_provider_names(watcher)
    finally:
        watcher.close()
        admin.dispose()


def test_revocation_on_one_replica_ends_the_tokens_streams_on_the_other(
    postgres_only: str, start_process: StartProcess
) -> None:
    """A bridge token revoked through replica A ends its open stream on replica B with UNAUTHENTICATED, before any further snapshot."""
    a, b = replicas(start_process, "replica-a", "replica-b", **NOTIFY_ONLY)
    before = version_of(a)
    # Bridge-role tokens are minted on the database itself (CreateToken refuses them).
    db = Database(make_engine(postgres_only), Cipher(()))
    try:
        view, secret = tokens.create_token(db, SYSTEM, "fleet", Role.BRIDGE)
    finally:
        db.engine.dispose()
    # Both replicas have published the token's revision (each through its own NOTIFY): the
    # same version, and not the one from before the token (which both may still report).
    seen: list[str] = []

    def agreed_after_token() -> bool:
        seen.append(version_of(a))
        return seen[-1] != before and version_of(b) == seen[-1]

    asyncio.run(eventually(agreed_after_token, within=10))
    current = seen[-1]
    watcher = Watcher(b, (("authorization", f"Bearer {secret}"),))
    try:
        watcher.until(current)
        with grpc.insecure_channel(a.target) as channel:
            tpb_grpc.TokenAdminServiceStub(channel).RevokeToken(
                tpb.RevokeTokenRequest(id=view.id), metadata=ADMIN_MD, timeout=10
            )
        with pytest.raises(grpc.RpcError) as ended:
            watcher.until(version_of(a), timeout=5)
        assert ended.value.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    finally:
        watcher.close()


def test_a_subscriber_can_resume_on_another_replica(
    postgres_only: str, start_process: StartProcess
) -> None:
    """Both replicas serve the same version for the same state, so known_version carries over."""
    a, b = replicas(start_process, "replica-a", "replica-b")
    current = version_of(a)
    assert version_of(b) == current
    with grpc.insecure_channel(b.target) as channel:
        stream = pb_grpc.ConfigServiceStub(channel).WatchProviders(
            pb.WatchProvidersRequest(node_id="moved", known_version=current), metadata=BRIDGE_MD
        )
        create_token(a, "dave")
        first = next(stream)
        assert int(first.snapshot.version) == int(current) + 1
        stream.cancel()


def list_subscribers(proc: Proc) -> list[pb.Subscriber]:
    with grpc.insecure_channel(proc.target) as channel:
        return list(
            pb_grpc.ConfigServiceStub(channel)
            .ListSubscribers(pb.ListSubscribersRequest(), metadata=ADMIN_MD, timeout=10)
            .subscribers
        )


def test_list_subscribers_shows_the_whole_cluster(
    postgres_only: str, start_process: StartProcess
) -> None:
    """A stream held by replica B, with its acknowledged version, is listed by replica A too."""
    a, b = replicas(start_process, "replica-a", "replica-b")
    watcher = Watcher(b)
    try:
        version = version_of(b)
        watcher.until(version)
        with grpc.insecure_channel(b.target) as channel:
            pb_grpc.ConfigServiceStub(channel).ReportStatus(
                pb.ReportStatusRequest(node_id="replica-test", version=version, applied=True),
                metadata=BRIDGE_MD,
                timeout=10,
            )

        def seen() -> list[pb.Subscriber]:
            return [s for s in list_subscribers(a) if s.node_id == "replica-test"]

        asyncio.run(eventually(lambda: [s.version_acked for s in seen()] == [version], 5, 0.2))
        (subscriber,) = seen()
        assert subscriber.replica_id == "replica-b"
        assert subscriber.version_sent == version
    finally:
        watcher.close()
    b.stop()
    # A stopped replica's streams leave the list.
    asyncio.run(eventually(lambda: not seen(), 5, 0.2))
