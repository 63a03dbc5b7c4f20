"""Private data on disk: directories 0700, files 0600, whatever the umask.

Every place that writes data (the SQLite database, dumps, the proxy CA key, the snapshot
cache, the recording spool, `aibridge up`'s secrets) goes through these, so no file holding
keys, tokens or request bodies is readable by other users of the machine. Directories that
already exist are left as they are (an operator may have set them up on purpose); the ones
created here are private.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` and its missing parents with mode 0700; return it."""
    missing: list[Path] = []
    here = path
    while not here.exists() and here != here.parent:
        missing.append(here)
        here = here.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # created meanwhile by someone else: theirs, left alone
        os.chmod(directory, DIR_MODE)  # mkdir's mode is reduced by the umask
    return path


def open_private(path: Path, flags: int = os.O_TRUNC, *, read: bool = False) -> int:
    """Open `path` for writing (created 0600 in a private directory); a file descriptor.

    `flags` adds to O_WRONLY | O_CREAT (O_TRUNC by default, O_EXCL to never overwrite);
    with `read`, O_RDWR instead of O_WRONLY. An existing file is made 0600 too: it is
    ours, and about to hold private data.
    """
    private_dir(path.parent)
    access = os.O_RDWR if read else os.O_WRONLY
    fd = os.open(path, access | os.O_CREAT | flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, data: bytes, flags: int = os.O_TRUNC) -> None:
    """Write `data` to `path` with mode 0600 (see open_private for `flags`)."""
    with os.fdopen(open_private(path, flags), "wb") as handle:
        handle.write(data)
