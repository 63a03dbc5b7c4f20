"""Large messages to the config service from callers it refuses: real processes.

The receive limit is 4 MiB (RecordInterceptions batches need it). A caller without a
valid token, or whose role may not call the method, must be refused from its metadata,
before the service receives and parses the body: the service's peak memory (VmHWM) is
the measure of what it buffered.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import grpc.aio
import pytest

from aibridge.config.v1 import config_service_pb2 as cs
from tests.fixtures.processes import Proc
from tests.resilience.harness import Admin, Procs

LIMIT = 4 * 2**20
CALLS = 16  # in flight at once: 64 MiB of bodies were they received
REPORT_STATUS = "/aibridge.config.v1.ConfigService/ReportStatus"


def _peak_kib(proc: Proc) -> int:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _body(size: int) -> bytes:
    """A valid ReportStatusRequest of about `size` bytes."""
    request = cs.ReportStatusRequest(node_id="n", version="1", error_detail="x" * size)
    return request.SerializeToString()


async def _send_all(
    target: str, metadata: tuple[tuple[str, str], ...], size: int
) -> set[grpc.StatusCode]:
    """CALLS calls at once, each on its own connection; the status codes answered."""
    body = _body(size)

    async def one(i: int) -> grpc.StatusCode:
        # Own channel each: one connection's flow control does not serialize the others.
        async with grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", LIMIT),
                ("grpc.use_local_subchannel_pool", 1),
            ],
        ) as channel:
            call = channel.unary_unary(REPORT_STATUS, request_serializer=None)
            try:
                await call(body, metadata=metadata, timeout=30)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

    return set(await asyncio.gather(*(one(i) for i in range(CALLS))))


@pytest.mark.parametrize(
    ("who", "code"),
    [
        ("no token", grpc.StatusCode.UNAUTHENTICATED),
        ("bad token", grpc.StatusCode.UNAUTHENTICATED),
        ("member", grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_large_bodies_of_refused_callers_are_not_received(
    procs: Procs, database_url: str, who: str, code: grpc.StatusCode
) -> None:
    """Sixteen 4 MiB ReportStatus calls at once without a token, with a bad one, or from a member are refused and grow the service's peak memory by less than 32 MiB (they were 64 MiB of bodies, 115 MiB of peak memory when read)."""
    service = await asyncio.to_thread(procs.config_service, database_url)
    target = str(service.ready["target"])
    metadata: tuple[tuple[str, str], ...] = ()
    if who == "bad token":
        metadata = (("authorization", "Bearer aib_" + "n" * 43),)
    elif who == "member":
        admin = Admin(target)
        try:
            metadata = (("authorization", f"Bearer {await admin.create_token('alice')}"),)
        finally:
            await admin.close()
    await _send_all(target, metadata, size=1024)  # warm: connections and code paths
    before = _peak_kib(service)
    codes = await _send_all(target, metadata, size=LIMIT - 64)
    grown_mib = (_peak_kib(service) - before) / 1024
    print(f"{who}: {CALLS} x 4 MiB refused, service peak memory +{grown_mib:.1f} MiB")
    assert codes == {code}
    assert grown_mib < 32, f"peak memory grew {grown_mib:.1f} MiB: the bodies were received"
