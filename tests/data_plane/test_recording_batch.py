"""A columnar batch reads back as the records it was made of, whichever way each column is
written (equal values and values within 0..127 as packed bytes, the others extended)."""

from __future__ import annotations

from aibridge.config.v1 import usage_service_pb2 as pb
from aibridge.recording import DESCRIPTION_COLUMNS, HAPPENED_COLUMNS, TOKEN_KINDS
from data_plane.recording.batch import Batch
from data_plane.recording.record import Description, Values

NS = 1_767_000_000_000_000_000


def _description(name: str) -> Description:
    return (name, 1, "/v1/x", "m", "m", "p", "alice", "t", "other", "ua", "", 1, "", False)


def _rows() -> list[Values]:
    described = [_description("a"), _description("b")]
    rows: list[Values] = []
    for i in range(300):
        tokens = (i, 0, 2**40 + i, 7, 0) if i % 3 else (0, 0, 0, 0, 0)
        rows.append(
            (
                described[i % 7 == 0],
                f"0190c8f0-0000-7000-8000-{i:012d}",
                NS + i,
                0 if i % 5 == 0 else NS + i + 1,
                NS + i + 2,
                1 + i % 2,
                200 if i % 11 else 502,
                1 + i % 3,
                i % 2 == 0,
                tokens,  # type: ignore[arg-type]
                (),
                "",
            )
        )
    return rows


def _read(payload: bytes) -> list[tuple[object, ...]]:
    cols = pb.RecordInterceptionsRequest.FromString(payload).columns
    strings = list(cols.strings)
    texts = [
        n for n in DESCRIPTION_COLUMNS if n not in ("provider_type", "credential_kind", "proxied")
    ]
    descriptions = [
        tuple(
            strings[getattr(cols, n)[d]] if n in texts else getattr(cols, n)[d]
            for n in DESCRIPTION_COLUMNS
        )
        for d in range(len(cols.provider_name))
    ]
    return [
        (
            descriptions[cols.description[i]],
            *(getattr(cols, n)[i] for n in HAPPENED_COLUMNS),
            tuple(getattr(cols, n)[i] for n in TOKEN_KINDS),
        )
        for i in range(len(cols.id))
    ]


def test_every_value_of_a_batch_reads_back_as_it_was_added() -> None:
    """Records with equal, small, large and zero values in every column, and two descriptions, read back from the encoded batch value for value."""
    rows = _rows()
    batch = Batch()
    for values in rows:
        assert batch.add(values) == 0
    assert _read(batch.encode()) == [(r[0], *r[1:9], r[9]) for r in rows]


def test_a_batch_of_one_description_and_equal_values_reads_back_whole() -> None:
    """A batch where every record shares its description, status, attempts and counts (each such column packed as one repeated varint) reads back whole."""
    rows = [
        (*_rows()[1][:1], *r[1:5], 1, 200, 1, True, (300, 20, 0, 0, 0), (), "") for r in _rows()
    ]
    batch = Batch()
    for values in rows:
        batch.add(values)  # type: ignore[arg-type]
    assert _read(batch.encode()) == [(r[0], *r[1:9], r[9]) for r in rows]
