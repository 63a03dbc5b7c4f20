"""`aibridge bridge` with interception recording on and a sink that only counts: what
building the records costs the bridge, shipping left out (bench/bridge_overhead.py
`--record`). Same settings, flags and logging as `aibridge bridge`; `--off` (first
argument): no sink, recording off, the same process otherwise. At exit it logs `bench
sink` with the number of records and their encoded bytes (the records are encoded as the
shipper does, in columnar batches off the request path)."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aibridge.collector import tune_collector
from aibridge.logs import get_logger
from aibridge.workers import run
from data_plane.bridge.server import Bridge
from data_plane.bridge.settings import SETTINGS, BridgeSettings
from data_plane.daemon import load_settings
from data_plane.recording.batch import Batch

if TYPE_CHECKING:
    from data_plane.bridge.interception import Record

log = get_logger("bench.recording_bridge")


class CountingSink:
    """Encodes the records it is given in batches, as the shipper does, and counts."""

    BATCH = 256

    def __init__(self) -> None:
        self.records = 0
        self.bytes = 0
        self._held: list[Record] = []

    def submit(self, record: Record) -> None:
        self._held.append(record)
        if len(self._held) >= self.BATCH:
            self.drain()

    def drain(self) -> None:
        batch = Batch()
        for record in self._held:
            values = record.values()
            batch.add(values)
        if batch:
            self.bytes += len(batch.encode())
        self.records += len(self._held)
        self._held.clear()


async def serve(settings: BridgeSettings, recording: bool) -> None:
    sink = CountingSink()
    # Signals handled here, not by uvicorn (which re-raises them once it has stopped, so
    # nothing would run after it): stop, then report.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    if not recording:  # no sink alone would mean the shipper, as in `aibridge bridge`
        settings = dataclasses.replace(settings, recording_on=False)
    bridge = Bridge(settings, sink=sink if recording else None)
    await bridge.start()
    tune_collector()  # as `aibridge bridge` does
    await stopping.wait()
    await bridge.stop()
    sink.drain()
    log.info("bench sink", records=sink.records, bytes=sink.bytes)


def main() -> int:
    prog = "bench recording bridge"
    argv = sys.argv[1:]
    recording = argv[:1] != ["--off"]
    argv = argv[0 if recording else 1 :]
    settings = load_settings(argv, prog, __doc__ or "", SETTINGS, BridgeSettings.from_env)
    return 2 if settings is None else run(prog, serve(settings, recording))


if __name__ == "__main__":
    sys.exit(main())
