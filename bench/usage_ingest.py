"""Config-service ingestion of interception records (DESIGN §10: ≥ 10,000 records/s per
process on PostgreSQL).

Starts one `aibridge config-service` process (SQLite in a temp dir, or --database-url:
PostgreSQL, in a fresh schema dropped afterwards) and sends it --records interception
records as RecordInterceptions batches of --batch, --concurrency calls in flight, with
the bridge token, as the bridge will. Requests are serialized before the clock starts
(the client shares the machine's cores with the service). Every tenth record carries a
tool call; prompts are off (the default). Then the same batches once more: a replay must
insert nothing. Reports records/s (wall clock) and per service CPU-second.

Then the bridge's side, end to end: the bridge's record shipper (`data_plane.recording`,
in this process, as aibridged runs it) is handed --records fresh records at once and ships
them to the same service: records/s from the first submit to the last record stored. And
its spool: the same count submitted with the service unreachable (records/s until all are
in the spool file), then a new shipper pointed at the service replays that spool (records/s
until all are stored).

    python bench/usage_ingest.py [--records 100000] [--batch 1000] [--concurrency 4]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test] [--form columns|rows]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_seconds, fresh_schema, table, write_result
from _stack import BRIDGE, config_service_env, free_port, start
from prometheus_client import CollectorRegistry

from aibridge.config.v1 import usage_pb2
from aibridge.config.v1 import usage_service_pb2 as pb
from aibridge.masking import Secret
from aibridge.recording import new_record_id
from data_plane.recording.batch import Message, columns, message_values
from data_plane.recording.metrics import RecordingMetrics
from data_plane.recording.shipper import Shipper, ShipperSettings
from data_plane.subscriber import SubscriberConfig

BAR = 10_000.0  # records/s per process on PostgreSQL
METHOD = "/aibridge.config.v1.UsageService/RecordInterceptions"


def batches(records: int, size: int, form: str = "columns") -> list[bytes]:
    """Serialized RecordInterceptionsRequests holding `records` realistic records, as
    columns (what the bridge sends) or records one by one (older spools, other clients)."""
    out: list[bytes] = []
    now = time.time_ns()
    for first in range(0, records, size):
        request = pb.RecordInterceptionsRequest()
        for n in range(first, min(first + size, records)):
            record = request.interceptions.add(
                id=new_record_id(now + n * 1000),
                provider_name="openai",
                route="/v1/chat/completions",
                requested_model="gpt-4o",
                served_model="gpt-4o-2024-08-06",
                outcome=usage_pb2.OUTCOME_COMPLETED,
                status_code=200,
                principal_id="0190a3c2-7d4e-7b3a-9c1d-2e3f4a5b6c7d",
                principal_name=f"engineer-{n % 1000}",
                token_id="0190a3c2-7d4e-7b3a-9c1d-2e3f4a5b6c7e",  # noqa: S106 - an id
                client="claude-code",
                user_agent="claude-cli/2.0.14 (external, cli)",
                session_id=f"session-{n % 5000}",
                credential_kind=usage_pb2.CREDENTIAL_KIND_POOLED,
                credential_hint="sk-p...abcd",
                attempts=1,
                usage=usage_pb2.TokenUsage(
                    input_tokens=1200, output_tokens=300, cache_read_tokens=800
                ),
                streamed=True,
            )
            record.started_at.FromNanoseconds(now + n * 1000)
            record.first_byte_at.FromNanoseconds(now + n * 1000 + 300_000_000)
            record.ended_at.FromNanoseconds(now + n * 1000 + 2_000_000_000)
            if n % 10 == 0:
                record.tool_calls.add(name="Bash", call_id=f"toolu_{n}")
        if form == "columns":
            values = [message_values(r) for r in request.interceptions]
            request = pb.RecordInterceptionsRequest(columns=columns(values))
        out.append(request.SerializeToString())
    return out


async def send(target: str, requests: list[bytes], concurrency: int) -> tuple[float, int, int]:
    """(seconds, inserted, duplicates) for sending every request, `concurrency` at once."""
    md = (("authorization", f"Bearer {BRIDGE}"),)
    inserted = duplicates = 0
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(
            METHOD,
            request_serializer=lambda raw: raw,
            response_deserializer=pb.RecordInterceptionsResponse.FromString,
        )
        queue = list(reversed(requests))

        async def worker() -> None:
            nonlocal inserted, duplicates
            while queue:
                answer: Any = await call(queue.pop(), metadata=md, timeout=60)
                inserted += answer.inserted
                duplicates += answer.duplicates

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, inserted, duplicates


class Shipping:
    """One record shipper of the bridge, with its own metrics registry."""

    def __init__(self, target: str, spool: Path, records: int) -> None:
        self.registry = CollectorRegistry()
        settings = ShipperSettings(
            queue_size=records + 1,
            flush_interval=1.0,
            spool_path=spool,
            spool_max_bytes=1 << 34,
            timeout=30.0,
        )
        connection = SubscriberConfig(target=target, token=Secret(BRIDGE), node_id="bench")
        self.shipper = Shipper(settings, connection, RecordingMetrics(self.registry, "b_"))

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value("b_recording_" + name, labels) or 0.0

    async def until(self, name: str, count: int, **labels: str) -> float:
        """Seconds until the metric reaches `count` (polled every 10 ms)."""
        started = time.perf_counter()
        while self.value(name, **labels) < count:  # noqa: ASYNC110 - a metric, no event to await
            await asyncio.sleep(0.01)
        return time.perf_counter() - started


def records_of(requests: list[bytes]) -> list[Message]:
    found: list[Message] = []
    for raw in requests:
        found.extend(map(Message, pb.RecordInterceptionsRequest.FromString(raw).interceptions))
    return found


async def ship(target: str, records: int, batch: int, tmp: Path) -> dict[str, float]:
    """Records/s through the bridge's shipper: direct, into the spool, replayed from it."""
    direct = Shipping(target, tmp / "direct.spool", records)
    await direct.shipper.start()
    for record in records_of(batches(records, batch, "rows")):
        direct.shipper.submit(record)
    shipped = await direct.until("records_total", records, result="inserted")
    await direct.shipper.close()

    with socket_closed() as nowhere:
        away = Shipping(nowhere, tmp / "away.spool", records)
        await away.shipper.start()
        for record in records_of(batches(records, batch, "rows")):
            away.shipper.submit(record)
        spooled = await away.until("spool_records", records)
        await away.shipper.close()
    back = Shipping(target, tmp / "away.spool", records)
    started = time.perf_counter()
    await back.shipper.start()
    await back.until("records_total", records, result="inserted")
    replayed = time.perf_counter() - started
    await back.shipper.close()
    return {
        "ship_records_per_s": records / shipped,
        "spool_records_per_s": records / spooled,
        "spool_replay_records_per_s": records / replayed,
    }


@contextlib.contextmanager
def socket_closed() -> Iterator[str]:
    """A loopback address where nothing listens."""
    yield f"127.0.0.1:{free_port()}"


def measure(args: argparse.Namespace, database_url: str, tmp: Path) -> dict[str, Any]:
    port = free_port()
    env = config_service_env(tmp / "data", port, free_port())
    env["AIBRIDGE_USAGE_RETENTION"] = "0"  # nothing pruned while measuring
    if database_url:
        env["AIBRIDGE_DATABASE_URL"] = database_url
    service = start(
        "config-service", ["config-service"], env, tmp, ready="config service ready", timeout=60
    )
    try:
        target = f"127.0.0.1:{port}"
        requests = batches(args.records, args.batch, args.form)
        cpu_before = cpu_seconds(service.pid)
        seconds, inserted, _ = asyncio.run(send(target, requests, args.concurrency))
        cpu = cpu_seconds(service.pid) - cpu_before
        replay_seconds, replay_inserted, replay_duplicates = asyncio.run(
            send(target, requests, args.concurrency)
        )
        shipping = asyncio.run(ship(target, args.records, args.batch, tmp))
    finally:
        service.stop()
    return {
        "records": args.records,
        "inserted": inserted,
        "seconds": seconds,
        "records_per_s": inserted / seconds,
        "service_cpu_s": cpu,
        "records_per_cpu_s": inserted / cpu if cpu else float("nan"),
        "replay_inserted": replay_inserted,
        "replay_duplicates": replay_duplicates,
        "replay_records_per_s": args.records / replay_seconds,
        **shipping,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--database-url", default="", help="PostgreSQL base URL (else SQLite)")
    p.add_argument(
        "--form",
        choices=("columns", "rows"),
        default="columns",
        help="batches as the bridge sends them (columns) or records one by one (rows)",
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="aibridge-bench-usage-") as tmp:
        if args.database_url:
            with fresh_schema(args.database_url) as url:
                result = measure(args, url, Path(tmp))
        else:
            result = measure(args, "", Path(tmp))
    engine = "postgresql" if args.database_url else "sqlite"
    rows = [
        ["records inserted", result["inserted"]],
        ["records/s (wall)", result["records_per_s"]],
        ["records per service CPU-second", result["records_per_cpu_s"]],
        [
            "replay: inserted / duplicates",
            f"{result['replay_inserted']} / {result['replay_duplicates']}",
        ],
        ["replay records/s", result["replay_records_per_s"]],
        ["bridge shipper: submit -> stored, records/s", result["ship_records_per_s"]],
        ["bridge shipper: service away, into the spool, records/s", result["spool_records_per_s"]],
        [
            "bridge shipper: spool replayed -> stored, records/s",
            result["spool_replay_records_per_s"],
        ],
    ]
    print(
        f"ingestion on {engine}, {args.form}, batches of {args.batch}, {args.concurrency} in flight"
    )
    print(table(["figure", "value"], rows))
    if engine == "postgresql":
        met = "met" if result["records_per_s"] >= BAR else "NOT met"
        print(f"bar: >= {BAR:,.0f} records/s per process: {met}")
    path = write_result(
        f"usage_ingest_{engine}",
        {
            "engine": engine,
            "form": args.form,
            "batch": args.batch,
            "concurrency": args.concurrency,
            **result,
        },
    )
    print(f"wrote {path}")
    ok = result["inserted"] == args.records and result["replay_inserted"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
