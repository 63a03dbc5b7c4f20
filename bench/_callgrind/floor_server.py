"""The floor for `fanout_instructions.py --floor`: a bare grpc.aio server doing only the writes.

grpc_floor.py's `drive` shape (each stream parked; at a change every stream's
`context.write` coroutine is stepped by hand, no task; one write in flight per stream, a
change during it sent after it) with the config service's server options and collector
tuning, serving WatchProviders with no auth, no database and no per-stream check, and a
`Change` unary that makes a new version (a WatchProvidersResponse of `--payload` bytes,
its version field the change's number) and starts every stream's write before it
answers. It logs the config service's ready line, so the benchmark drives it as it
drives the service.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import grpc
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))
from aibridge.collector import tune_collector
from aibridge.config.v1 import config_service_pb2 as pb
from config_service.server import MAX_CONCURRENT_RPCS, grpc_options

CHANGE = "/bench.Floor/Change"


def payload_of(version: int, size: int) -> bytes:
    snapshot = pb.ProviderSnapshot(version=str(version), history="h" * size)
    return pb.WatchProvidersResponse(snapshot=snapshot).SerializeToString()


async def serve(size: int) -> None:
    loop = asyncio.get_running_loop()
    version = 1
    payload = payload_of(version, size)
    parked: dict[Any, None] = {}
    in_flight: dict[Any, Any] = {}  # a write in flight (None: another one due after it)

    def drive(context: Any) -> None:
        if context in in_flight:
            in_flight[context] = None
            return
        step(context, context.write(payload))

    def step(context: Any, coro: Any) -> None:
        try:
            future = coro.send(None)
        except StopIteration:
            if in_flight.pop(context, 0) is None:
                step(context, context.write(payload))
            return
        except BaseException:
            in_flight.pop(context, None)
            return
        in_flight.setdefault(context, future)
        future.add_done_callback(lambda _f: step(context, coro))

    async def watch(request: bytes, context: Any) -> None:
        await context.write(payload)
        parked[context] = None
        try:
            await loop.create_future()  # until the call ends
        finally:
            parked.pop(context, None)

    async def change(request: bytes, context: Any) -> bytes:
        nonlocal version, payload
        version += 1
        payload = payload_of(version, size)
        for context_ in list(parked):
            drive(context_)
        return pb.GetProviderSnapshotResponse(
            snapshot=pb.ProviderSnapshot(version=str(version))
        ).SerializeToString()

    handler = grpc.method_handlers_generic_handler(
        "aibridge.config.v1.ConfigService",
        {"WatchProviders": grpc.unary_stream_rpc_method_handler(watch)},
    )
    control = grpc.method_handlers_generic_handler(
        "bench.Floor", {"Change": grpc.unary_unary_rpc_method_handler(change)}
    )
    server = grpc.aio.server(
        options=grpc_options(False), maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS
    )
    server.add_generic_rpc_handlers((handler, control))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    tune_collector()
    ready = {"event": "config service ready", "listen": f"127.0.0.1:{port}"}
    print(json.dumps(ready), file=sys.stderr, flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
