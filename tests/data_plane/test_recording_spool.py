"""The recording spool file: frames round-trip in order, a torn tail or a corrupt frame is
dropped with a warning, acknowledged frames are never replayed, the cap holds, the file is
private and locked by its process."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from data_plane.errors import SpoolBusy, SpoolError
from data_plane.recording.spool import FRAME, HEADER, Spool, encode_frame, spool_name

BATCHES = st.lists(st.tuples(st.binary(max_size=300), st.integers(0, 5000)), max_size=12)


def spooled(path: Path, batches: list[tuple[bytes, int]], max_bytes: int = 1 << 30) -> Spool:
    spool = Spool(path, max_bytes)
    for payload, count in batches:
        assert spool.append(payload, count)
    return spool


def reopen(path: Path, max_bytes: int = 1 << 30) -> Spool:
    spool = Spool(path, max_bytes)
    assert spool.open() is not None
    return spool


def contents(spool: Spool) -> list[tuple[bytes, int]]:
    return [(frame.payload, frame.count) for frame in spool.frames()]


@settings(max_examples=60, deadline=None)
@given(BATCHES)
def test_frames_come_back_in_the_order_they_were_appended(batches: list[tuple[bytes, int]]) -> None:
    """Any batches appended are read back after a reopen, byte for byte, oldest first."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "n.spool"
        spooled(path, batches).close()
        spool = Spool(path, 1 << 30)
        assert (spool.open() is None) == (not batches)  # no batch, no file
        assert contents(spool) == batches
        assert spool.pending_frames == len(batches)
        assert spool.pending_records == sum(count for _, count in batches)
        spool.close()


@settings(max_examples=60, deadline=None)
@given(BATCHES.filter(bool), st.data())
def test_a_torn_last_frame_is_dropped_and_the_rest_kept(
    batches: list[tuple[bytes, int]], data: st.DataObject
) -> None:
    """A file cut anywhere inside its last frame (SIGKILL mid-write) opens with the whole frames before it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "n.spool"
        spooled(path, batches).close()
        last = len(encode_frame(*batches[-1]))
        size = path.stat().st_size
        cut = data.draw(st.integers(size - last + 1, size - 1))
        os.truncate(path, cut)
        with capture_logs() as logs:
            spool = reopen(path)
        assert contents(spool) == batches[:-1]
        assert path.stat().st_size == size - last
        assert [e["torn_bytes"] for e in logs if e["log_level"] == "warning"] == [cut - size + last]
        spool.close()


def test_a_corrupt_frame_in_the_middle_is_dropped_and_the_frames_after_it_kept(
    tmp_path: Path,
) -> None:
    """A flipped byte in one frame loses that frame only; the file is rewritten without it."""
    path = tmp_path / "n.spool"
    batches = [(b"first" * 10, 1), (b"second" * 10, 2), (b"third" * 10, 3)]
    spooled(path, batches).close()
    second = HEADER.size + len(encode_frame(*batches[0]))
    raw = bytearray(path.read_bytes())
    raw[second + FRAME.size + 5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with capture_logs() as logs:
        spool = reopen(path)
    assert contents(spool) == [batches[0], batches[2]]
    (warning,) = [e for e in logs if e["log_level"] == "warning"]
    assert warning["corrupt_bytes"] == len(encode_frame(*batches[1]))
    assert warning["torn_bytes"] == 0
    spool.close()
    assert contents(reopen(path)) == [batches[0], batches[2]]


def test_a_corrupt_length_does_not_hide_the_frames_after_it(tmp_path: Path) -> None:
    """A frame whose length field is damaged is skipped by finding the next whole frame."""
    path = tmp_path / "n.spool"
    batches = [(b"a" * 50, 1), (b"b" * 50, 1), (b"c" * 50, 1)]
    spooled(path, batches).close()
    with open(path, "r+b") as f:
        f.seek(HEADER.size + 4)  # the first frame's length
        f.write((10_000).to_bytes(4, "big"))
    spool = reopen(path)
    assert contents(spool) == batches[1:]
    spool.close()


def test_acknowledged_frames_are_not_replayed_after_a_reopen(tmp_path: Path) -> None:
    """Frames are acknowledged in order; a reopened spool starts after the last acknowledged one."""
    path = tmp_path / "n.spool"
    spool = spooled(path, [(b"one", 1), (b"two", 2), (b"three", 3)])
    first = spool.peek()
    assert first is not None
    assert first.payload == b"one"
    spool.ack(first)
    second = spool.peek()
    assert second is not None
    assert second.payload == b"two"
    with pytest.raises(ValueError, match="in order"):
        spool.ack(first)
    spool.close()
    spool = reopen(path)
    assert contents(spool) == [(b"two", 2), (b"three", 3)]
    assert spool.pending_records == 5
    spool.close()


def test_a_fully_acknowledged_spool_is_truncated_to_its_header(tmp_path: Path) -> None:
    """Once every frame is acknowledged the file shrinks back to its header."""
    path = tmp_path / "n.spool"
    spool = spooled(path, [(b"x" * 1000, 1), (b"y" * 1000, 1)])
    while (frame := spool.peek()) is not None:
        spool.ack(frame)
    assert spool.empty
    assert path.stat().st_size == HEADER.size
    spool.close()


def test_a_damaged_header_replays_everything(tmp_path: Path) -> None:
    """An unreadable acked offset means every frame is replayed (the service drops repeats)."""
    path = tmp_path / "n.spool"
    spool = spooled(path, [(b"one", 1), (b"two", 1)])
    frame = spool.peek()
    assert frame is not None
    spool.ack(frame)
    spool.close()
    with open(path, "r+b") as f:
        f.seek(10)
        f.write(b"\xff\xff")
    with capture_logs() as logs:
        spool = reopen(path)
    assert contents(spool) == [(b"one", 1), (b"two", 1)]
    assert [e["header_reset"] for e in logs if e["log_level"] == "warning"] == [True]
    spool.close()


def test_an_append_past_the_cap_is_refused_after_the_acknowledged_prefix_is_reclaimed(
    tmp_path: Path,
) -> None:
    """The cap bounds the file; acknowledged frames are compacted away before an append is refused."""
    path = tmp_path / "n.spool"
    frame_size = len(encode_frame(b"z" * 100, 1))
    spool = Spool(path, HEADER.size + 3 * frame_size)
    assert all(spool.append(b"z" * 100, 1) for _ in range(3))
    assert not spool.append(b"z" * 100, 1)
    first = spool.peek()
    assert first is not None
    spool.ack(first)
    assert spool.append(b"w" * 100, 1)
    assert path.stat().st_size == HEADER.size + 3 * frame_size
    assert [p for p, _ in contents(spool)] == [b"z" * 100, b"z" * 100, b"w" * 100]
    spool.close()
    assert [p for p, _ in contents(reopen(path, HEADER.size + 3 * frame_size))][-1] == b"w" * 100


def test_the_spool_is_private(tmp_path: Path) -> None:
    """The spool file is created 0600 in a 0700 directory, whatever the umask."""
    path = tmp_path / "spool" / "n.spool"
    old = os.umask(0)
    try:
        spooled(path, [(b"secret-ish", 1)]).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_spool_in_use_is_refused(tmp_path: Path) -> None:
    """A second opener of a locked spool gets SpoolBusy, naming the file."""
    path = tmp_path / "n.spool"
    first = spooled(path, [(b"one", 1)])
    with pytest.raises(SpoolBusy, match="in use by another process"):
        Spool(path, 1 << 20).open()
    first.close()
    reopen(path).close()


@pytest.mark.parametrize("content", [b"this is somebody else's file\n", b"short", b"\x00"])
def test_a_file_that_is_not_a_spool_is_left_alone(tmp_path: Path, content: bytes) -> None:
    """A foreign file at the spool path, long or shorter than a header, is refused with what to do, and not modified."""
    path = tmp_path / "n.spool"
    path.write_bytes(content)
    with pytest.raises(SpoolError, match=r"not a recording spool.*AIBRIDGE_RECORDING_SPOOL"):
        Spool(path, 1 << 20).open()
    assert path.read_bytes() == content


def test_a_header_cut_short_at_creation_starts_an_empty_spool(tmp_path: Path) -> None:
    """A spool whose header write was cut short (a crash right after creating it) opens empty."""
    path = tmp_path / "n.spool"
    path.write_bytes(HEADER.pack(b"AIBSPL01", HEADER.size, 0)[:5])
    spool = reopen(path)
    assert spool.empty
    assert spool.append(b"one", 1)
    spool.close()
    assert contents(reopen(path)) == [(b"one", 1)]


def test_a_missing_spool_is_not_created_until_needed(tmp_path: Path) -> None:
    """Opening a spool that does not exist creates nothing; the first append creates it."""
    path = tmp_path / "spool" / "n.spool"
    spool = Spool(path, 1 << 20)
    assert spool.open() is None
    assert not path.parent.exists()
    assert spool.append(b"one", 1)
    assert path.exists()
    spool.close()


@given(st.lists(st.text(max_size=300), min_size=2, max_size=6, unique=True))
def test_node_ids_map_to_distinct_safe_file_names(node_ids: list[str]) -> None:
    """Distinct node ids (NUL, '/', '..', unicode, very long) never share a file, and the name stays in one directory."""
    names = [spool_name(node) for node in node_ids]
    assert len(set(names)) == len(names)
    for name in names:
        assert "/" not in name
        assert "\x00" not in name
        assert len(name) <= 255
        assert name.endswith(".spool")
        assert name not in (".", "..")
