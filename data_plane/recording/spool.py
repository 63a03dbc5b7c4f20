"""The recording spool: record batches the config service has not acknowledged, on disk.

One file per bridge node, mode 0600 in a 0700 directory, locked (flock) by the process
using it. Layout:

    header  b"AIBSPL01" | acked offset (u64) | crc32 of the offset (u32)
    frame   b"\\xa1REC" | payload length (u32) | records (u32) | crc32 (u32) | payload
    frame   ...

A payload is one serialized `RecordInterceptionsRequest`, exactly as it goes on the wire.
Frames are appended and fsynced (`append`); `peek` reads the oldest frame not yet
acknowledged, `ack` moves the acked offset past it (header rewritten in place, fsynced), and
once every frame is acknowledged the file is truncated back to its header. When an append
would pass the size cap, the acknowledged prefix is compacted away first (live frames
copied to a new file, fsynced, renamed over); past the cap the append is refused and the
caller counts the records as dropped.

Opening recovers from a crash: a frame whose checksum (over length, count and payload)
fails, or that runs past the end of the file, is dropped with a warning: at the end it is
a torn write (SIGKILL mid-append) and the file is truncated to the last whole frame; in
the middle it is damage and the file is rewritten with the whole frames on either side.
A header whose checksum fails means "acknowledged nothing": the whole file is replayed,
which is harmless because the config service stores a record at most once.

Every method blocks (file I/O, fsync): the shipper calls them from a worker thread, one at
a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aibridge.files import FILE_MODE, open_private, private_dir
from aibridge.logs import get_logger
from data_plane.errors import SpoolBusy, SpoolError

log = get_logger(__name__)

MAGIC = b"AIBSPL01"
HEADER = struct.Struct(">8sQI")
FRAME_MAGIC = b"\xa1REC"
FRAME = struct.Struct(">4sIII")
# A batch is at most 4 MiB on the wire; anything claiming more than this is damage.
MAX_FRAME = 16 * 1024 * 1024
_CHUNK = 1024 * 1024
SUFFIX = ".spool"


@dataclass(frozen=True)
class Frame:
    """One spooled batch: where it starts and ends in the file, its records, its payload."""

    offset: int
    end: int
    count: int
    payload: bytes


@dataclass(frozen=True)
class Damage:
    """What opening a spool found and dropped."""

    torn_bytes: int = 0  # an incomplete last frame (a write cut short)
    corrupt_bytes: int = 0  # frames in the middle whose checksum failed
    header_reset: bool = False  # the acked offset was unreadable: everything is replayed


def _frame_crc(length: int, count: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack(">II", length, count)))


def encode_frame(payload: bytes, count: int) -> bytes:
    if len(payload) > MAX_FRAME:
        raise ValueError(f"a spool frame holds at most {MAX_FRAME} bytes")
    crc = _frame_crc(len(payload), count, payload)
    return FRAME.pack(FRAME_MAGIC, len(payload), count, crc) + payload


def _header(acked: int) -> bytes:
    offset = struct.pack(">Q", acked)
    return HEADER.pack(MAGIC, acked, zlib.crc32(offset))


class Spool:
    """One spool file. Closed until `open()` finds it or `append()` creates it."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._fd: int | None = None
        self.size = 0  # bytes in the file (what the cap applies to)
        self.acked = HEADER.size  # frames before this offset are acknowledged
        self.pending_frames = 0
        self.pending_records = 0

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    @property
    def empty(self) -> bool:
        return self.pending_frames == 0

    # ------------------------------------------------------------------ open / close

    def open(self, *, create: bool = False) -> Damage | None:
        """Lock and recover the file; None when there is none (and `create` is off).

        SpoolBusy when another process holds it; SpoolError when the file is not a spool.
        """
        if self._fd is not None:
            return Damage()
        fd = self._lock(create)
        if fd is None:
            return None
        try:
            damage = self._recover(fd)
        except BaseException:
            os.close(fd)
            raise
        return damage

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def remove(self) -> None:
        """Delete the file (every frame acknowledged) and close it; the lock is held until
        the file is gone, so no other process adopts it half-way."""
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self.close()

    def _lock(self, create: bool) -> int | None:
        while True:
            try:
                if create:
                    fd = open_private(self.path, 0, read=True)
                else:
                    fd = os.open(self.path, os.O_RDWR)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise SpoolError(f"cannot open the recording spool {self.path}: {exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise SpoolBusy(
                    f"the recording spool {self.path} is in use by another process"
                ) from None
            # Removed or replaced between our open and our lock (another bridge adopted and
            # deleted it): that inode is not the spool any more; open the path again.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.fchmod(fd, FILE_MODE)  # ours, and it holds records: private, as created
                return fd
            os.close(fd)
            if not create:
                return None

    def _recover(self, fd: int) -> Damage:
        size = os.fstat(fd).st_size
        self._check_header(fd, size)
        if size < HEADER.size:
            # New, or cut short while its header was written: nothing was ever spooled.
            os.ftruncate(fd, 0)
            os.pwrite(fd, _header(HEADER.size), 0)
            os.fsync(fd)
            self._fd, self.size, self.acked = fd, HEADER.size, HEADER.size
            self.pending_frames = self.pending_records = 0
            return Damage()
        _, acked, crc = HEADER.unpack(os.pread(fd, HEADER.size, 0))
        header_reset = crc != zlib.crc32(struct.pack(">Q", acked)) or not (
            HEADER.size <= acked <= size
        )
        if header_reset:
            acked = HEADER.size
        frames, bad = _scan(fd, acked, size)
        torn = bad[-1][1] - bad[-1][0] if bad and bad[-1][1] == size else 0
        damage = Damage(torn, sum(end - start for start, end in bad) - torn, header_reset)
        self._fd = fd
        self._keep(frames, acked, damage)
        self.pending_frames = len(frames)
        self.pending_records = sum(count for _, _, count in frames)
        if torn or damage.corrupt_bytes or header_reset:
            log.warning(
                "recording spool damaged; whole frames kept, the rest dropped",
                path=str(self.path),
                torn_bytes=torn,
                corrupt_bytes=damage.corrupt_bytes,
                header_reset=header_reset,
                frames=len(frames),
                records=self.pending_records,
            )
        return damage

    def _check_header(self, fd: int, size: int) -> None:
        """Refuse a file that is not a spool (a header cut short is still ours)."""
        start = os.pread(fd, len(MAGIC), 0)
        if not MAGIC.startswith(start) or (size >= HEADER.size and start != MAGIC):
            raise SpoolError(
                f"{self.path} is not a recording spool (unknown header); move it away or set "
                "AIBRIDGE_RECORDING_SPOOL to another file"
            )

    def _keep(self, frames: list[tuple[int, int, int]], acked: int, damage: Damage) -> None:
        """Leave only the whole frames on disk: rewrite past corruption, else cut the tail."""
        assert self._fd is not None
        if damage.corrupt_bytes:
            self._rewrite([(start, end) for start, end, _ in frames])
            return
        end = frames[-1][1] if frames else acked
        if damage.torn_bytes:
            os.ftruncate(self._fd, end)
        if damage.header_reset:
            os.pwrite(self._fd, _header(acked), 0)
        if damage.torn_bytes or damage.header_reset:
            os.fsync(self._fd)
        self.size, self.acked = end, acked
        if not frames:
            self._truncate()

    # ------------------------------------------------------------------ frames

    def append(self, payload: bytes, count: int) -> bool:
        """Write one batch and fsync it; False (nothing written) when it would pass the cap."""
        frame = encode_frame(payload, count)
        if self._fd is None:
            self.open(create=True)
        assert self._fd is not None
        if self.size + len(frame) > self.max_bytes and self.acked > HEADER.size:
            self._rewrite([(self.acked, self.size)])
        if self.size + len(frame) > self.max_bytes:
            return False
        written = os.pwrite(self._fd, frame, self.size)
        if written != len(frame):
            os.ftruncate(self._fd, self.size)
            raise OSError(f"short write to the recording spool {self.path}")
        os.fdatasync(self._fd)
        self.size += len(frame)
        self.pending_frames += 1
        self.pending_records += count
        return True

    def peek(self) -> Frame | None:
        """The oldest frame not acknowledged; None when there is none."""
        if self._fd is None or self.pending_frames == 0:
            return None
        found = _valid_frame(self._fd, self.acked, self.size)
        if found is None:
            # Damaged since it was opened (the disk, or someone else): recover as at start.
            fd, self._fd = self._fd, None
            try:
                self._recover(fd)
            except BaseException:
                os.close(fd)
                raise
            return self.peek()
        end, count = found
        payload = os.pread(self._fd, end - self.acked - FRAME.size, self.acked + FRAME.size)
        return Frame(self.acked, end, count, payload)

    def ack(self, frame: Frame) -> None:
        """The config service stored `frame`: never replay it again."""
        assert self._fd is not None
        if frame.offset != self.acked:
            raise ValueError("frames are acknowledged in order")
        self.pending_frames -= 1
        self.pending_records -= frame.count
        if self.pending_frames == 0:
            self._truncate()
            return
        self.acked = frame.end
        os.pwrite(self._fd, _header(self.acked), 0)
        os.fdatasync(self._fd)

    def frames(self) -> Iterator[Frame]:
        """Every frame not acknowledged, oldest first (for tests and tools)."""
        if self._fd is None:
            return
        pos = self.acked
        while pos < self.size:
            found = _valid_frame(self._fd, pos, self.size)
            if found is None:
                return
            end, count = found
            payload = os.pread(self._fd, end - pos - FRAME.size, pos + FRAME.size)
            yield Frame(pos, end, count, payload)
            pos = end

    def _truncate(self) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, HEADER.size)
        os.pwrite(self._fd, _header(HEADER.size), 0)
        os.fdatasync(self._fd)
        self.size = self.acked = HEADER.size
        self.pending_frames = self.pending_records = 0

    def _rewrite(self, ranges: list[tuple[int, int]]) -> None:
        """Replace the file by a header and the given byte ranges of it (whole frames)."""
        assert self._fd is not None
        private_dir(self.path.parent)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        new = open_private(tmp, os.O_TRUNC, read=True)
        try:
            # Locked before it takes the spool's name, so no one adopts it in between.
            fcntl.flock(new, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(new, _header(HEADER.size))
            size = HEADER.size
            for start, end in ranges:
                pos = start
                while pos < end:
                    chunk = os.pread(self._fd, min(_CHUNK, end - pos), pos)
                    os.write(new, chunk)
                    pos += len(chunk)
                size += end - start
            os.fsync(new)
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except BaseException:
            os.close(new)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(self._fd)
        self._fd, self.size, self.acked = new, size, HEADER.size


def _valid_frame(fd: int, pos: int, size: int) -> tuple[int, int] | None:
    """(end, records) of the whole frame at `pos`, or None when there is none."""
    if pos + FRAME.size > size:
        return None
    magic, length, count, crc = FRAME.unpack(os.pread(fd, FRAME.size, pos))
    end = pos + FRAME.size + length
    if magic != FRAME_MAGIC or length > MAX_FRAME or end > size:
        return None
    payload = os.pread(fd, length, pos + FRAME.size)
    if len(payload) != length or _frame_crc(length, count, payload) != crc:
        return None
    return end, count


def _next_frame(fd: int, pos: int, size: int) -> int:
    """The offset of the next whole frame at or after `pos`, else `size`."""
    while pos < size:
        chunk = os.pread(fd, min(_CHUNK, size - pos) + len(FRAME_MAGIC) - 1, pos)
        at = chunk.find(FRAME_MAGIC)
        while at != -1:
            if _valid_frame(fd, pos + at, size) is not None:
                return pos + at
            at = chunk.find(FRAME_MAGIC, at + 1)
        pos += max(len(chunk) - len(FRAME_MAGIC) + 1, 1)
    return size


def _scan(fd: int, pos: int, size: int) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
    """From `pos` to `size`: the whole frames as (offset, end, count), and the damaged ranges."""
    frames: list[tuple[int, int, int]] = []
    bad: list[tuple[int, int]] = []
    while pos < size:
        found = _valid_frame(fd, pos, size)
        if found is not None:
            frames.append((pos, found[0], found[1]))
            pos = found[0]
            continue
        resync = _next_frame(fd, pos + 1, size)
        bad.append((pos, resync))
        pos = resync
    return frames, bad


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def spool_name(node_id: str) -> str:
    """A file name for `node_id`: bytes other than ASCII letters, digits, '.', '_' and '-'
    escaped as %xx (so two ids never share a file), a long id shortened by its hash."""
    name = "".join(
        chr(b) if b < 128 and (chr(b).isalnum() or chr(b) in "._-") else f"%{b:02x}"
        for b in node_id.encode()
    )
    if len(name) > 200:
        name = name[:160] + "-" + hashlib.sha256(node_id.encode()).hexdigest()[:32]
    return (name or "node") + SUFFIX
