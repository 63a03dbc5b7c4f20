"""A columnar batch reads back as the records it was made of, whichever way each column is
written (equal values and values within 0..127 as packed bytes, the others extended), in
both encodings: `columns`, and `fixed_columns` (ids as one text, times and varying counts
fixed-width), which `unfix` turns back into `columns` for a service from before it."""

from __future__ import annotations

import pytest

from aibridge.config.v1 import usage_service_pb2 as pb
from aibridge.recording import DESCRIPTION_COLUMNS, FIXED_COLUMNS, HAPPENED_COLUMNS, TOKEN_KINDS
from config_service.servicers.usage import batch_rows
from data_plane.recording.batch import Batch, is_fixed, split, unfix
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
    """The records of a payload of `columns`, read column by column as the wire has them."""
    request = pb.RecordInterceptionsRequest.FromString(payload)
    assert not request.HasField("fixed_columns")
    cols = request.columns
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


def _with_calls_and_prompts(rows: list[Values]) -> list[Values]:
    return [
        (
            *r[:10],
            ((f"tool-{i}", f"call-{i}", "{}"),) if i % 4 == 0 else (),
            f"prompt {i}" if i % 6 == 0 else "",
        )  # type: ignore[misc]
        for i, r in enumerate(rows)
    ]


@pytest.mark.parametrize("fixed", [False, True], ids=["columns", "fixed_columns"])
def test_every_column_round_trips_in_both_encodings(fixed: bool) -> None:
    """Every column of a batch (ids, times with unset first bytes, varying and equal counts and statuses, descriptions, tool calls, prompts) reads back through the config service's reading as it was added, in either encoding, and a fixed_columns payload made into columns reads back the same."""
    rows = _with_calls_and_prompts(_rows())
    batch = Batch()
    assert batch.extend(rows) == len(rows)
    payload = batch.encode(fixed)
    assert is_fixed(payload) is fixed
    request = pb.RecordInterceptionsRequest.FromString(payload)
    if fixed:  # the per-record columns that vary went fixed-width, the ids as one text
        wire = request.fixed_columns
        assert len(wire.id_text) == 36 * len(rows) and not wire.id
        assert all(len(getattr(wire, n + "_fixed")) for n in ("started_at", "ended_at"))
        assert len(wire.input_tokens_fixed) == len(rows) and not wire.input_tokens
        assert len(wire.status_code_fixed) == len(rows)
    expected = _read(_batch_of(rows).encode())
    plain = unfix(payload)
    assert _read(plain) == expected == [(r[0], *r[1:9], tuple(r[9])) for r in rows]
    got, calls, repeats = batch_rows(request)
    assert (got, calls, repeats) == batch_rows(pb.RecordInterceptionsRequest.FromString(plain))
    assert [row["id"] for row in got] == [r[1] for r in rows]
    assert [row["prompt"] for row in got] == [r[11] for r in rows]
    assert [(c["name"], c["call_id"]) for c in calls] == [(n, c) for r in rows for n, c, _ in r[10]]


def _batch_of(rows: list[Values]) -> Batch:
    batch = Batch()
    for values in rows:
        assert batch.add(values) == 0
    return batch


def test_a_fixed_columns_payload_splits_into_halves_that_hold_every_record() -> None:
    """Splitting a fixed_columns payload (to isolate a refused record) gives payloads of columns that together hold every record once."""
    rows = _with_calls_and_prompts(_rows())
    parts, ids = split(_batch_of(rows).encode(fixed=True))
    assert ids == [] and len(parts) == 2
    assert [r for part in parts for r in _read(part)] == _read(_batch_of(rows).encode())


def test_a_value_beyond_the_fixed_widths_goes_as_columns() -> None:
    """A batch with a value no fixed-width field holds (a negative count, a non-UUID id) is encoded as columns instead, never lost."""
    rows = _rows()
    odd = [(*rows[0][:9], (-1, 0, 0, 0, 0), (), ""), *rows[1:]]
    assert not is_fixed(_batch_of(odd).encode(fixed=True))  # type: ignore[arg-type]
    short_id = [(rows[0][0], "r-1", *rows[0][2:]), *rows[1:]]
    payload = _batch_of(short_id).encode(fixed=True)  # type: ignore[arg-type]
    wire = pb.RecordInterceptionsRequest.FromString(payload).fixed_columns
    assert list(wire.id)[:2] == ["r-1", rows[1][1]] and not wire.id_text


def test_every_fixed_width_column_has_its_field() -> None:
    """Each column that may go fixed-width has its `<name>_fixed` field beside its own."""
    fields = pb.InterceptionColumns.DESCRIPTOR.fields_by_name
    for name in FIXED_COLUMNS:
        assert name in fields and name + "_fixed" in fields
