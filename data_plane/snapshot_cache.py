"""Last-known-good snapshot on disk, so a daemon can serve while the config service is away.

The file holds the serialized `ProviderSnapshot` (with key material in the bridge scope),
so it is written with mode 0600, atomically (temporary file in the same directory, fsync,
rename): a crash never leaves a half-written cache. A missing or unreadable cache is not
an error: the daemon simply waits for the config service.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.files import private_dir
from aibridge.logs import get_logger

log = get_logger(__name__)


def save(path: Path, snapshot: cs.ProviderSnapshot) -> None:
    """Write the snapshot atomically with mode 0600 (blocking; call from a thread)."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(snapshot.SerializeToString())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load(path: Path) -> cs.ProviderSnapshot | None:
    """The cached snapshot, or None when there is none or it cannot be read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("snapshot cache unreadable", path=str(path), error=str(exc))
        return None
    snapshot = cs.ProviderSnapshot()
    try:
        snapshot.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError, a bare Exception subclass
        log.warning("snapshot cache corrupt", path=str(path), error=str(exc))
        return None
    if not snapshot.version:
        log.warning("snapshot cache holds no version; ignored", path=str(path))
        return None
    return snapshot
