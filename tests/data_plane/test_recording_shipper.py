"""The record shipper: records reach the config service once, whatever happens to it.

Two kinds of config service, both real gRPC servers on port 0: the real one in process
(SQLite and PostgreSQL) for what is stored, and a scripted UsageService (a fake at the
transport) that is away, slow, loses answers or refuses records, and remembers the order
in which batches arrived.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from aibridge.config.v1 import usage_pb2
from aibridge.config.v1 import usage_service_pb2 as pb
from aibridge.config.v1 import usage_service_pb2_grpc as pb_grpc
from aibridge.masking import Secret
from aibridge.recording import ids_from_text, new_record_id
from config_service.rbac import Role
from data_plane.recording.batch import Batch, Message, message_values
from data_plane.recording.metrics import RecordingMetrics
from data_plane.recording.shipper import Shipper, ShipperSettings
from data_plane.recording.spool import Spool, spool_name
from data_plane.subscriber import SubscriberConfig
from tests.fixtures.services import BRIDGE_TOKEN, Service
from tests.fixtures.waits import eventually

P = "aibridged_"


def record(i: int = 0, **extra: Any) -> usage_pb2.Interception:
    started = datetime.now(UTC) - timedelta(seconds=1)
    start, end = Timestamp(), Timestamp()
    start.FromDatetime(started)
    end.FromDatetime(started + timedelta(milliseconds=20))
    fields: dict[str, Any] = {
        "id": new_record_id(),
        "started_at": start,
        "ended_at": end,
        "provider_name": "openai",
        "route": "/v1/chat/completions",
        "requested_model": f"gpt-{i}",
        "outcome": usage_pb2.OUTCOME_COMPLETED,
        "status_code": 200,
        "client": "codex",
        "attempts": 1,
    }
    return usage_pb2.Interception(**(fields | extra))


def closed_port() -> str:
    """A loopback address where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


class Shipping:
    """A shipper, its metrics and its spool path, built for one test."""

    def __init__(self, target: str, spool: Path, **settings: Any) -> None:
        self.registry = CollectorRegistry()
        values: dict[str, Any] = {
            "queue_size": 20_000,
            "flush_interval": 0.05,
            "spool_path": spool,
            "spool_max_bytes": 1 << 30,
            "timeout": 1.0,
        }
        values.update(settings)
        self.settings = ShipperSettings(**values)
        config = SubscriberConfig(target=target, token=Secret(BRIDGE_TOKEN), node_id="n1")
        self.shipper = Shipper(self.settings, config, RecordingMetrics(self.registry, P))

    def submit(self, *records: Any) -> None:
        """Hands each record to the shipper, in order."""
        for r in records:
            self.shipper.submit(Message(r) if isinstance(r, usage_pb2.Interception) else r)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(P + name, labels) or 0.0

    def spooled(self) -> float:
        return self.metric("recording_spool_records")


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "spool" / spool_name("n1")


@pytest.fixture
async def started() -> AsyncIterator[Callable[[Shipping], Any]]:
    """Starts shippers; closes every one still open at the end."""
    running: list[Shipping] = []

    async def start(shipping: Shipping) -> Shipping:
        await shipping.shipper.start()
        running.append(shipping)
        return shipping

    yield start
    for shipping in running:
        await shipping.shipper.close()


async def stored(service: Service) -> list[usage_pb2.Interception]:
    stub = pb_grpc.UsageServiceStub(service.channel())
    found: list[usage_pb2.Interception] = []
    token = ""
    while True:
        page = await stub.ListInterceptions(
            pb.ListInterceptionsRequest(page_size=1000, page_token=token),
            metadata=service.md_for(Role.OWNER),
        )
        found.extend(page.interceptions)
        token = page.next_page_token
        if not token:
            return found


# ---------------------------------------------------------------------------- scripted service


class ScriptedUsage(pb_grpc.UsageServiceServicer):
    """A UsageService that does what the test says: `mode` is ok, away, slow or lose;
    `reads_fixed`: it reads fixed_columns and says so, else it is a service from before
    them (the field ignored, the answer without the flag)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.reads_fixed = False
        self.batches: list[list[str]] = []  # ids of every batch stored, in arrival order
        self.forms: list[str] = []  # each call's form: columns, fixed_columns, interceptions
        self.refuse: set[str] = set()  # ids answered with INVALID_ARGUMENT
        self.tokens: set[str] = set()

    @property
    def ids(self) -> list[str]:
        return [i for batch in self.batches for i in batch]

    async def RecordInterceptions(
        self, request: pb.RecordInterceptionsRequest, context: Any
    ) -> pb.RecordInterceptionsResponse:
        self.tokens.add(dict(context.invocation_metadata()).get("authorization", ""))
        if self.mode == "away":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "database unavailable")
        if self.mode == "slow":
            await asyncio.sleep(30)
        ids = [r.id for r in request.interceptions] + list(request.columns.id)
        fixed = request.fixed_columns
        if self.reads_fixed:
            ids += list(fixed.id) + ids_from_text(fixed.id_text)
        self.forms += [
            form
            for form in ("columns", "fixed_columns")
            if request.HasField(form)  # type: ignore[arg-type]
        ] or ["interceptions"]
        bad = [i for i, rid in enumerate(ids) if rid in self.refuse]
        if bad:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"interceptions[{bad[0]}].route: too long"
            )
        fresh = [i for i in ids if i not in set(self.ids)]
        self.batches.append(ids)
        if self.mode == "lose":  # stored, but the answer never arrives
            self.mode = "ok"
            await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        return pb.RecordInterceptionsResponse(
            inserted=len(fresh),
            duplicates=len(ids) - len(fresh),
            reads_fixed_columns=self.reads_fixed,
        )


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedUsage, str]]:
    servicer = ScriptedUsage()
    server = grpc.aio.server()
    pb_grpc.add_UsageServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(grace=None)


Ship = Callable[..., Awaitable[Shipping]]


@pytest.fixture
def servicer(scripted: tuple[ScriptedUsage, str]) -> ScriptedUsage:
    return scripted[0]


@pytest.fixture
def ship(scripted: tuple[ScriptedUsage, str], spool_path: Path, started: Any) -> Ship:
    """Starts a shipper to the scripted service, which first answers as `service` says."""

    async def start(service: str = "ok", spool: Path = spool_path, **settings: Any) -> Shipping:
        servicer, target = scripted
        servicer.mode = service
        return await started(Shipping(target, spool, **settings))

    return start


# ---------------------------------------------------------------------------- real service


async def test_submitted_records_are_stored_once_with_the_bridge_token(
    service: Service, spool_path: Path, started: Any
) -> None:
    """Every submitted record is stored exactly once, and nothing touches the disk."""
    shipping = await started(Shipping(service.target, spool_path))
    sent = [record(i) for i in range(120)]
    shipping.submit(*sent)
    await eventually(lambda: shipping.metric("recording_records_total", result="inserted") == 120)
    assert sorted(r.id for r in await stored(service)) == sorted(r.id for r in sent)
    assert not await asyncio.to_thread(spool_path.exists)


async def test_a_replayed_batch_is_stored_once(
    service: Service, spool_path: Path, started: Any
) -> None:
    """A batch stored before (its answer lost) and replayed from the spool adds nothing: counted as duplicates."""
    batch = [record(i) for i in range(5)]
    await pb_grpc.UsageServiceStub(service.channel()).RecordInterceptions(
        pb.RecordInterceptionsRequest(interceptions=batch), metadata=service.md_for(Role.BRIDGE)
    )
    spool = Spool(spool_path, 1 << 20)
    payload = pb.RecordInterceptionsRequest(interceptions=batch).SerializeToString()
    assert spool.append(payload, len(batch))
    assert spool.append(payload, len(batch))
    spool.close()
    shipping = await started(Shipping(service.target, spool_path))
    await eventually(lambda: shipping.metric("recording_records_total", result="duplicate") == 10)
    assert sorted(r.id for r in await stored(service)) == sorted(r.id for r in batch)
    assert shipping.spooled() == 0


async def test_a_spool_written_by_the_row_form_replays_beside_columnar_frames(
    service: Service, spool_path: Path, started: Any
) -> None:
    """A spool frame of records one by one (what bridges before the columnar batch wrote) is replayed and stored whole, in order with a columnar frame behind it."""
    old = [
        record(i, prompt=f"p{i}", tool_calls=[usage_pb2.ToolCall(name="f", call_id=f"c{i}")])
        for i in range(3)
    ]
    new = [record(10 + i) for i in range(4)]
    batch = Batch()
    for r in new:
        values = message_values(r)
        batch.add(values)
    spool = Spool(spool_path, 1 << 20)
    assert spool.append(pb.RecordInterceptionsRequest(interceptions=old).SerializeToString(), 3)
    assert spool.append(batch.encode(), 4)
    spool.close()
    shipping = await started(Shipping(service.target, spool_path))
    await eventually(lambda: shipping.metric("recording_records_total", result="inserted") == 7)
    found = {r.id: r for r in await stored(service)}
    assert sorted(found) == sorted(r.id for r in old + new)
    for r in old + new:
        assert (found[r.id].requested_model, found[r.id].tool_call_count) == (
            r.requested_model,
            len(r.tool_calls),
        )
    assert shipping.spooled() == 0


async def test_records_closed_while_the_service_is_away_are_replayed_at_the_next_start(
    service: Service, spool_path: Path, started: Any
) -> None:
    """Shutting down with the config service away spools the queue; the next shipper stores it all, once."""
    away = Shipping(closed_port(), spool_path)
    await away.shipper.start()
    sent = [record(i) for i in range(300)]
    away.submit(*sent)
    with capture_logs() as logs:
        await away.shipper.close()
    assert any(e["event"].startswith("records spooled at shutdown") for e in logs)
    back = await started(Shipping(service.target, spool_path))
    await eventually(lambda: back.metric("recording_records_total", result="inserted") == 300)
    assert sorted(r.id for r in await stored(service)) == sorted(r.id for r in sent)
    await eventually(lambda: back.spooled() == 0)


async def test_close_ships_the_queue_when_the_service_answers(
    service: Service, spool_path: Path
) -> None:
    """Records still queued at shutdown are shipped before close returns."""
    shipping = Shipping(service.target, spool_path, flush_interval=60)
    await shipping.shipper.start()
    sent = [record(i) for i in range(40)]
    shipping.submit(*sent)
    await shipping.shipper.close()
    assert len(await stored(service)) == 40
    assert not await asyncio.to_thread(spool_path.exists)


async def test_a_refused_record_is_dropped_and_the_rest_of_its_batch_stored(
    service: Service, spool_path: Path, started: Any
) -> None:
    """The record the service refuses (INVALID_ARGUMENT) is split out, dropped and counted; the others are stored."""
    shipping = await started(Shipping(service.target, spool_path))
    good = [record(i) for i in range(9)]
    shipping.submit(*good[:4], record(99, route="x" * 300), *good[4:])
    with capture_logs() as logs:
        await eventually(
            lambda: shipping.metric("recording_records_dropped_total", reason="rejected") == 1
        )
    await eventually(lambda: shipping.metric("recording_records_total", result="inserted") == 9)
    assert sorted(r.id for r in await stored(service)) == sorted(r.id for r in good)
    (refused,) = [e for e in logs if e["event"] == "config service refused an interception record"]
    assert "route" in refused["detail"]


# ---------------------------------------------------------------------------- scripted service


async def test_spooled_batches_are_replayed_in_order_once_the_service_is_back(
    servicer: ScriptedUsage, ship: Ship, spool_path: Path
) -> None:
    """Records submitted while the service is away reach it, once the service is back, in the order they were submitted."""
    shipping = await ship(service="away")
    sent: list[str] = []
    for burst in range(4):
        for i in range(25):
            r = record(burst * 100 + i)
            sent.append(r.id)
            shipping.submit(r)
        await eventually(lambda: shipping.spooled() == len(sent))
    assert servicer.ids == []
    servicer.mode = "ok"
    await eventually(lambda: set(servicer.ids) == set(sent), within=15)
    assert servicer.ids == sent
    assert servicer.tokens == {f"Bearer {BRIDGE_TOKEN}"}
    assert shipping.metric("recording_batches_total", result="retried") >= 1
    assert shipping.metric("recording_batches_total", result="spooled") >= 4
    await eventually(lambda: spool_path.stat().st_size < 100)


async def test_the_bridge_token_never_reaches_the_spool_or_a_log_line(
    servicer: ScriptedUsage, ship: Ship, spool_path: Path
) -> None:
    """Through an outage and a replay, the spool file and the log lines hold no trace of the bridge token."""
    with capture_logs() as logs:
        shipping = await ship(service="away")
        for i in range(20):
            shipping.submit(record(i, principal_name="alice"))
        await eventually(lambda: shipping.spooled() == 20)
        spooled = await asyncio.to_thread(spool_path.read_bytes)
        servicer.mode = "ok"
        await eventually(lambda: len(servicer.ids) == 20, within=15)
    assert b"alice" in spooled  # the records are there...
    assert BRIDGE_TOKEN.encode() not in spooled  # ...the credential is not
    assert logs
    assert BRIDGE_TOKEN not in repr(logs)


async def test_a_lost_answer_is_retried_and_the_service_sees_the_batch_twice(
    servicer: ScriptedUsage, ship: Ship
) -> None:
    """A batch whose answer was lost is sent again (the service drops the repeat by id)."""
    shipping = await ship(service="lose")
    sent = [record(i) for i in range(3)]
    shipping.submit(*sent)
    await eventually(lambda: len(servicer.batches) == 2, within=15)
    assert servicer.batches[0] == servicer.batches[1] == [r.id for r in sent]


async def test_a_slow_service_gets_the_queue_moved_to_the_spool(ship: Ship) -> None:
    """While an attempt hangs past the flush interval, newer records are spooled rather than kept in memory."""
    shipping = await ship(service="slow", timeout=2.0)
    shipping.submit(record(0))
    await eventually(lambda: shipping.metric("recording_queue_depth") == 0)
    for i in range(1, 11):
        shipping.submit(record(i))
    await eventually(lambda: shipping.spooled() == 10)
    assert shipping.metric("recording_queue_depth") == 0


async def test_records_past_the_queue_size_are_counted_and_warned_about(
    servicer: ScriptedUsage, ship: Ship
) -> None:
    """A full queue drops the record it cannot hold, counts it and says so in a warning."""
    shipping = await ship(queue_size=10, flush_interval=30)
    with capture_logs() as logs:
        for i in range(25):
            shipping.submit(record(i))
    assert shipping.metric("recording_records_dropped_total", reason="queue_full") == 15
    (warning,) = [e for e in logs if e["event"] == "interception records dropped"]
    assert warning["dropped"] == {"queue_full": 1}  # the first drop is told at once
    await shipping.shipper.close()
    assert len(servicer.ids) == 10


async def test_records_past_the_spool_cap_are_counted_as_dropped(
    ship: Ship, spool_path: Path
) -> None:
    """With the service away and the spool at its cap, records are dropped, counted and warned about."""
    shipping = await ship(service="away", spool_max_bytes=4096)
    with capture_logs() as logs:
        for burst in range(40):
            for i in range(5):
                shipping.submit(record(burst * 5 + i))
            await eventually(lambda: shipping.metric("recording_queue_depth") == 0)
        await eventually(
            lambda: (
                shipping.spooled()
                + shipping.metric("recording_records_dropped_total", reason="spool_full")
                == 200
            )
        )
    assert 0 < shipping.spooled() < 200
    assert (await asyncio.to_thread(spool_path.stat)).st_size <= 4096
    assert any(e["event"] == "interception records dropped" for e in logs)


async def test_a_dead_bridges_spool_is_adopted_replayed_and_removed(
    servicer: ScriptedUsage, ship: Ship, spool_path: Path
) -> None:
    """A spool left in the directory by another node (no process holds it) is replayed before this node's records, then deleted."""
    orphan_path = spool_path.with_name(spool_name("host-4242"))
    orphan = Spool(orphan_path, 1 << 20)
    old = [record(i) for i in range(3)]
    orphan.append(pb.RecordInterceptionsRequest(interceptions=old).SerializeToString(), 3)
    orphan.close()
    shipping = await ship()
    new = record(7)
    shipping.submit(new)
    await eventually(lambda: len(servicer.ids) == 4)
    assert servicer.ids == [r.id for r in old] + [new.id]
    await eventually(lambda: not orphan_path.exists())


async def test_a_spool_held_by_a_live_process_is_not_adopted(
    servicer: ScriptedUsage, ship: Ship, spool_path: Path
) -> None:
    """Another node's spool that its process still holds is left to it."""
    other = Spool(spool_path.with_name(spool_name("alive")), 1 << 20)
    other.append(pb.RecordInterceptionsRequest(interceptions=[record()]).SerializeToString(), 1)
    shipping = await ship()
    shipping.submit(record(1))
    await eventually(lambda: len(servicer.ids) == 1)
    assert other.pending_frames == 1
    other.close()


async def test_a_record_too_large_for_any_batch_is_dropped_and_the_others_shipped(
    servicer: ScriptedUsage, ship: Ship
) -> None:
    """A record bigger than a batch may be (4 MiB message limit) is counted as too_large; its neighbours are shipped."""
    shipping = await ship()
    small = [record(i) for i in range(4)]
    huge = record(9, prompt="\x00" + "p" * (4 << 20))
    shipping.submit(*small[:2], huge, *small[2:])
    await eventually(lambda: len(servicer.ids) == 4)
    assert servicer.ids == [r.id for r in small]
    assert shipping.metric("recording_records_dropped_total", reason="too_large") == 1


class _Unserializable:
    """A record whose making fails (a bug in it): the shipper must go on without it."""

    id = "broken"

    def values(self) -> Any:
        raise RuntimeError("a bug in making the record")


class _Unencodable:
    """A record whose values are made but cannot be encoded (a text that is not a str)."""

    id = "odd"

    def values(self) -> Any:
        values = message_values(record())
        return (values[0], 12345, *values[2:])


async def test_a_record_that_cannot_be_serialized_is_logged_and_the_others_shipped(
    servicer: ScriptedUsage, ship: Ship
) -> None:
    """A record that fails to serialize is left out, logged and counted as dropped; the records around it are shipped."""
    shipping = await ship()
    good = [record(i) for i in range(2)]
    shipping.submit(good[0], _Unserializable(), good[1])
    await eventually(lambda: len(servicer.ids) == 2)
    assert servicer.ids == [r.id for r in good]
    assert shipping.metric("recording_records_dropped_total", reason="unbuildable") == 1


async def test_a_batch_with_a_record_that_fails_to_encode_drops_only_that_record(
    servicer: ScriptedUsage, ship: Ship
) -> None:
    """A record whose values do not encode as columns is dropped as unbuildable; the rest of its batch is shipped."""
    shipping = await ship()
    good = [record(i) for i in range(3)]
    shipping.submit(good[0], _Unencodable(), good[1], good[2])
    await eventually(lambda: len(servicer.ids) == 3)
    assert servicer.ids == [r.id for r in good]
    assert shipping.metric("recording_records_dropped_total", reason="unbuildable") == 1


async def test_a_record_submitted_after_close_is_counted_as_dropped(
    scripted: tuple[ScriptedUsage, str], spool_path: Path
) -> None:
    """A record that arrives after shutdown is not lost silently."""
    _, target = scripted
    shipping = Shipping(target, spool_path)
    await shipping.shipper.start()
    await shipping.shipper.close()
    shipping.submit(record())
    assert shipping.metric("recording_records_dropped_total", reason="closed") == 1


async def test_a_bridge_ships_its_records_unless_recording_is_switched_off(tmp_path: Path) -> None:
    """By default the bridge's record sink is the shipper; AIBRIDGE_RECORDING=false builds no records at all."""
    from data_plane.bridge.server import Bridge
    from data_plane.bridge.settings import BridgeSettings

    env = {
        "AIBRIDGE_BRIDGE_TOKEN": BRIDGE_TOKEN,
        "AIBRIDGE_DATA_DIR": str(tmp_path),
        "AIBRIDGE_NODE_ID": "node/1",
    }
    on = Bridge(BridgeSettings.from_env(env), bedrock_factory=None)
    assert on.shipper is not None
    assert on.app.sink is on.shipper
    assert on.settings.recording.spool_path == tmp_path / "spool" / "node%2f1.spool"
    off = Bridge(
        BridgeSettings.from_env({**env, "AIBRIDGE_RECORDING": "false"}), bedrock_factory=None
    )
    assert off.shipper is None
    assert off.app.sink is None
    for bridge in (on, off):
        await bridge.http.aclose()


async def test_records_are_kept_in_memory_while_the_spool_cannot_be_written(
    servicer: ScriptedUsage, ship: Ship, tmp_path: Path
) -> None:
    """With the service away and the spool unwritable (its directory became a file), records stay queued and reach the service once it is back."""
    blocker = tmp_path / "spool"
    with capture_logs() as logs:
        shipping = await ship(service="away", spool=blocker / "n1.spool")
        await asyncio.to_thread(blocker.write_text, "")  # the spool is made on first need
        sent = [record(i) for i in range(5)]
        shipping.submit(*sent)
        await eventually(
            lambda: any(e["event"] == "recording spool cannot be written" for e in logs)
        )
    assert shipping.metric("recording_queue_depth") == 5
    assert shipping.metric("recording_records_dropped_total", reason="spool_full") == 0
    servicer.mode = "ok"
    await eventually(lambda: sorted(servicer.ids) == sorted(r.id for r in sent), within=15)


# ---------------------------------------------------------------------------- batch form


async def test_batches_go_as_fixed_columns_once_the_service_says_it_reads_them(
    ship: Ship, servicer: ScriptedUsage
) -> None:
    """The first batch goes as columns; once an answer says the service reads fixed_columns, the next batches go so, every record stored once."""
    servicer.reads_fixed = True
    shipping = await ship()
    first, second = [record(i) for i in range(5)], [record(i) for i in range(5, 9)]
    shipping.submit(*first)
    await eventually(lambda: len(servicer.batches) == 1)
    shipping.submit(*second)
    await eventually(lambda: len(servicer.batches) == 2)
    assert servicer.forms == ["columns", "fixed_columns"]
    assert servicer.ids == [r.id for r in first + second]


async def test_a_service_from_before_fixed_columns_gets_the_records_again_as_columns(
    ship: Ship, servicer: ScriptedUsage
) -> None:
    """A batch sent as fixed_columns to a service that ignores them (an older replica in a rolling upgrade: 0 stored, no flag) is sent again as columns, and so are the batches after it: nothing lost, nothing counted twice."""
    servicer.reads_fixed = True
    shipping = await ship()
    shipping.submit(record(0))
    await eventually(lambda: len(servicer.batches) == 1)
    servicer.reads_fixed = False  # the next call reaches a service from before fixed_columns
    later = [record(i) for i in range(1, 6)]
    shipping.submit(*later[:3])
    await eventually(lambda: len(servicer.batches) == 3)
    shipping.submit(*later[3:])
    await eventually(lambda: len(servicer.batches) == 4)
    assert servicer.forms == ["columns", "fixed_columns", "columns", "columns"]
    assert servicer.batches[1] == []  # ignored: nothing stored from it
    assert servicer.ids[1:] == [r.id for r in later]
    assert shipping.metric("recording_records_total", result="inserted") == 6
    assert shipping.metric("recording_batches_total", result="shipped") == 3
