"""The SQLite change signal against datagrams from anyone on the host (real processes, real sockets)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import grpc
import pytest

from aibridge.config.v1 import config_service_pb2 as pb
from aibridge.config.v1 import config_service_pb2_grpc as pb_grpc
from config_service import local_signal
from config_service.crypto import Cipher
from config_service.db.engine import make_engine
from config_service.rbac import SYSTEM, Role
from config_service.store import tokens
from config_service.store.database import Database
from tests.fixtures.processes import Proc
from tests.fixtures.services import BRIDGE_TOKEN, StartProcess
from tests.fixtures.waits import eventually

BRIDGE_MD = (("authorization", f"Bearer {BRIDGE_TOKEN}"),)
NOBODY = 65534
# Only the signal may make the service reload within the test.
SIGNAL_ONLY = {"AIBRIDGE_RESYNC_INTERVAL": "60s"}


@pytest.fixture
def sqlite_only(database_url: str) -> str:
    if not database_url.startswith("sqlite"):
        pytest.skip("the change signal is SQLite's")
    if not local_signal.available():
        pytest.skip("the abstract namespace is Linux's")
    return database_url


def version_of(proc: Proc) -> int:
    with grpc.insecure_channel(proc.target) as channel:
        response = pb_grpc.ConfigServiceStub(channel).GetProviderSnapshot(
            pb.GetProviderSnapshotRequest(), metadata=BRIDGE_MD, timeout=10
        )
    return int(response.snapshot.version)


def commit_unannounced(database_url: str) -> None:
    """A write to the database file that no service announces."""
    db = Database(make_engine(database_url), Cipher(()))
    try:
        tokens.create_token(db, SYSTEM, f"quiet-{time.monotonic_ns()}", Role.MEMBER)
    finally:
        db.engine.dispose()


def socket_of(database_url: str) -> str:
    group = local_signal.group_of(database_url)
    assert group is not None
    names = [
        line.rsplit(None, 1)[-1][1:]
        for line in Path("/proc/net/unix").read_text().splitlines()
        if line.rsplit(None, 1)[-1].startswith("@" + group)
    ]
    assert len(names) == 1, names
    return names[0]


def send_as(uid: int | None, name: str, payloads: list[bytes]) -> None:
    """Send each payload to the abstract socket `name` from a child process running as `uid`
    (None: this process's user)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            if uid is not None:
                os.setgid(uid)
                os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                for payload in payloads:
                    sock.sendto(payload, "\0" + name)
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0


@pytest.fixture
def as_root() -> None:
    if os.getuid() != 0:
        pytest.skip("sending as another user needs root")


def test_a_datagram_from_another_user_does_not_make_the_service_reload(
    sqlite_only: str, start_process: StartProcess, as_root: None
) -> None:
    """A revision announced by another user's process is ignored (the abstract namespace has no permissions); one from the service's own user is followed."""
    proc = start_process(**SIGNAL_ONLY)
    before = version_of(proc)
    commit_unannounced(sqlite_only)
    name = socket_of(sqlite_only)
    send_as(NOBODY, name, [str(before + 1).encode()] * 50)
    time.sleep(1.0)  # room for a reload that must not happen
    assert version_of(proc) == before
    send_as(None, name, [str(before + 1).encode()])

    def followed() -> bool:
        return version_of(proc) > before

    asyncio.run(eventually(followed, within=10))


def test_garbage_datagrams_do_not_make_the_service_reload(
    sqlite_only: str, start_process: StartProcess
) -> None:
    """Datagrams that carry no revision (garbage, empty, a negative number, 64 KiB of digits) are ignored; the service keeps serving."""
    proc = start_process(**SIGNAL_ONLY)
    before = version_of(proc)
    commit_unannounced(sqlite_only)
    send_as(None, socket_of(sqlite_only), [b"", b"garbage", b"9" * 65536, b"12x", b"-1"])
    time.sleep(1.0)  # room for a reload that must not happen
    assert version_of(proc) == before
    assert proc.popen.poll() is None
