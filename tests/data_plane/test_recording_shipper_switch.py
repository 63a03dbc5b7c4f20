"""The shipper's switch between fixed_columns and columns, against a config service on port
0 that is of one version or the other from call to call (a rolling upgrade behind one
address) and loses the answers it is told to lose: every record is stored exactly once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from aibridge.config.v1 import usage_service_pb2 as pb
from aibridge.config.v1 import usage_service_pb2_grpc as pb_grpc
from aibridge.recording import ids_from_text
from data_plane.recording.spool import spool_name
from tests.data_plane.test_recording_shipper import Shipping, record
from tests.fixtures.waits import eventually


class Replicas(pb_grpc.UsageServiceServicer):
    """A UsageService that stores by id; each call is answered by the version next in
    `script` (then `version`): "new" reads fixed_columns and says so, "old" is a service
    from before them (the field ignored, the answer without the word); `lose` loses the
    answer of the next calls it names after storing ("reset": UNAVAILABLE, "late": past
    the bridge's deadline)."""

    def __init__(self) -> None:
        self.version = "new"
        self.script: list[str] = []
        self.lose: list[str] = []
        self.stored: Counter[str] = Counter()  # id -> times stored fresh (must stay 1)
        self.calls: list[tuple[str, str, int]] = []  # (version, form, records stored)

    async def RecordInterceptions(
        self, request: pb.RecordInterceptionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RecordInterceptionsResponse:
        version = self.script.pop(0) if self.script else self.version
        ids = [r.id for r in request.interceptions] + list(request.columns.id)
        fixed = request.fixed_columns
        if version == "new":
            ids += list(fixed.id) + ids_from_text(fixed.id_text)
        fresh = [i for i in dict.fromkeys(ids) if i not in self.stored]
        self.stored.update(fresh)
        form = "fixed_columns" if request.HasField("fixed_columns") else "columns"
        self.calls.append((version, form, len(fresh)))
        loss = self.lose.pop(0) if self.lose else ""
        if loss == "late":
            await asyncio.sleep(3)
        if loss == "reset":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        return pb.RecordInterceptionsResponse(
            inserted=len(fresh),
            duplicates=len(ids) - len(fresh),
            reads_fixed_columns=version == "new",
        )


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[Replicas, Shipping]]:
    servicer = Replicas()
    server = grpc.aio.server()
    pb_grpc.add_UsageServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    shipping = Shipping(f"127.0.0.1:{port}", tmp_path / "spool" / spool_name("n1"), timeout=1.0)
    await shipping.shipper.start()
    yield servicer, shipping
    await shipping.shipper.close()
    await server.stop(grace=None)


async def switched_to_fixed(servicer: Replicas, shipping: Shipping) -> list[str]:
    """One batch shipped to a new service: the shipper sends fixed_columns from then on."""
    first = [record(i) for i in range(3)]
    shipping.submit(*first)
    await eventually(lambda: len(servicer.calls) == 1)
    return [r.id for r in first]


@pytest.mark.parametrize("loss", ["reset", "late"])
async def test_the_resend_as_columns_losing_its_answer_stores_each_record_once(
    replicas: tuple[Replicas, Shipping], loss: str
) -> None:
    """A fixed_columns batch ignored by an old replica is resent as columns; that answer lost (reset, or past the deadline) after storing, the batch is tried again: each record stored once, none lost or dropped."""
    servicer, shipping = replicas
    sent = await switched_to_fixed(servicer, shipping)
    servicer.version = "old"
    servicer.lose = ["", loss]  # the fixed_columns call answered; the resend's answer lost
    later = [record(i) for i in range(3, 8)]
    shipping.submit(*later)
    sent += [r.id for r in later]
    await eventually(lambda: shipping.metric("recording_batches_total", result="shipped") == 2)
    assert set(servicer.stored) == set(sent)
    assert set(servicer.stored.values()) == {1}
    assert servicer.calls[:3] == [
        ("new", "columns", 3),
        ("old", "fixed_columns", 0),
        ("old", "columns", 5),
    ]
    assert ("old", "columns", 0) in servicer.calls[3:]  # the retry: duplicates only
    assert shipping.metric("recording_records_total", result="inserted") == 3
    assert shipping.metric("recording_records_dropped_total", reason="rejected") == 0


@pytest.mark.parametrize("loss", ["reset", "late"])
async def test_a_lost_answer_to_fixed_columns_then_an_old_replica_stores_each_record_once(
    replicas: tuple[Replicas, Shipping], loss: str
) -> None:
    """A fixed_columns batch stored by a new replica whose answer is lost, tried again on an old replica (ignored, resent as columns: duplicates), is stored once; the batches after it go as columns and are stored too."""
    servicer, shipping = replicas
    sent = await switched_to_fixed(servicer, shipping)
    servicer.lose = [loss]
    servicer.script = ["new"]  # the next call reaches a new replica; every later one an old
    servicer.version = "old"
    later = [record(i) for i in range(3, 6)]
    shipping.submit(*later)
    sent += [r.id for r in later]
    await eventually(lambda: shipping.metric("recording_batches_total", result="shipped") == 2)
    after = [record(i) for i in range(6, 9)]
    shipping.submit(*after)
    sent += [r.id for r in after]
    await eventually(lambda: shipping.metric("recording_batches_total", result="shipped") == 3)
    assert set(servicer.stored) == set(sent)
    assert set(servicer.stored.values()) == {1}
    assert servicer.calls[1] == ("new", "fixed_columns", 3)
    assert servicer.calls[-1] == ("old", "columns", 3)
    assert shipping.metric("recording_records_total", result="duplicate") == 3
