"""File modes of the data every component writes: files 0600, created directories 0700.

Real files in a temporary directory, with the common umask 022 (which alone would give
0644 files and 0755 directories).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from aibridge.commands.up import save_secrets
from aibridge.config.v1 import config_service_pb2 as cs
from config_service.db.engine import make_engine
from data_plane import snapshot_cache
from data_plane.dump import Dumper, Exchange
from data_plane.proxy.ca import CertificateAuthority
from data_plane.recording.spool import Spool


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sqlite_database_and_its_wal_and_shm_are_private(tmp_path: Path) -> None:
    """The SQLite database, its -wal and -shm are 0600 in a 0700 directory created for it."""
    db = tmp_path / "data" / "aibridge.db"
    engine = make_engine(f"sqlite:///{db}")
    try:
        with engine.begin() as conn:  # a write: WAL mode creates -wal and -shm
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        files = {p.name: mode(p) for p in db.parent.iterdir()}
    finally:
        engine.dispose()
    assert files == {"aibridge.db": 0o600, "aibridge.db-wal": 0o600, "aibridge.db-shm": 0o600}
    assert mode(db.parent) == 0o700


def test_existing_world_readable_database_is_made_private(tmp_path: Path) -> None:
    """A database (and -wal) left 0644 by an older version is made 0600 at start."""
    db = tmp_path / "aibridge.db"
    make_engine(f"sqlite:///{db}").dispose()
    for path in (db, Path(f"{db}-wal")):
        path.touch()
        path.chmod(0o644)
    make_engine(f"sqlite:///{db}").dispose()
    assert (mode(db), mode(Path(f"{db}-wal"))) == (0o600, 0o600)


async def test_dumps_are_private(tmp_path: Path) -> None:
    """Dump files are 0600 and the directories created for them 0700."""
    base = tmp_path / "dumps"
    await Dumper(base).dump(
        Exchange("openai", "gpt-x", "r1", "POST", "/v1/chat", [], b"{}", 200, [], b"{}")
    )
    files = [p for p in base.rglob("*") if p.is_file()]
    dirs = [base, *(p for p in base.rglob("*") if p.is_dir())]
    assert len(files) == 2
    assert {mode(p) for p in files} == {0o600}
    assert {mode(p) for p in dirs} == {0o700}


def test_generated_proxy_ca_is_private(tmp_path: Path) -> None:
    """The generated CA key and certificate are 0600 in a 0700 data directory."""
    data = tmp_path / "data"
    CertificateAuthority.load_or_create(data / "proxy-ca.pem", data / "proxy-ca-key.pem")
    assert {p.name: mode(p) for p in data.iterdir()} == {
        "proxy-ca.pem": 0o600,
        "proxy-ca-key.pem": 0o600,
    }
    assert mode(data) == 0o700


def test_snapshot_cache_and_up_secrets_are_private(tmp_path: Path) -> None:
    """The snapshot cache and `aibridge up`'s secrets file are 0600 in 0700 directories."""
    cache = tmp_path / "cache" / "snapshot.pb"
    snapshot_cache.save(cache, cs.ProviderSnapshot(version="1"))
    save_secrets(tmp_path / "up", {"AIBRIDGE_ADMIN_TOKEN": "x"})
    secrets = next((tmp_path / "up").iterdir())
    assert (mode(cache), mode(cache.parent)) == (0o600, 0o700)
    assert (mode(secrets), mode(secrets.parent)) == (0o600, 0o700)


def test_recording_spool_is_private(tmp_path: Path) -> None:
    """The recording spool (interception records: prompts when recorded) is 0600 in a 0700 directory."""
    spool = Spool(tmp_path / "spool" / "node.spool", 1 << 20)
    assert spool.append(b"records", 1)
    spool.close()
    assert (mode(spool.path), mode(spool.path.parent)) == (0o600, 0o700)
    spool.path.chmod(0o644)  # left readable by an older version, or by hand
    assert spool.open() is not None
    spool.close()
    assert mode(spool.path) == 0o600
