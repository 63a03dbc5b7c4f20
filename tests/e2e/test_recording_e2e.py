"""Recording end to end with real processes: a config service and a bridge as deployed, a
client sending traffic and keeping the X-AIBridge-Request-Id of every answer it got.

Every answered request is in the database exactly once after the config service was killed
for a while (5 s here, 60 s in the slow variant), also when the bridge was stopped (SIGTERM)
while the service was still away and started again after it was back. A bridge killed with
SIGKILL loses at most the records of its last flush interval: measured and printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import httpx
import pytest

from aibridge.config.v1 import token_admin_service_pb2 as ta
from aibridge.config.v1 import token_admin_service_pb2_grpc as ta_grpc
from aibridge.config.v1 import token_pb2
from aibridge.config.v1 import usage_service_pb2 as pb
from aibridge.config.v1 import usage_service_pb2_grpc as pb_grpc
from tests.fixtures.processes import Proc
from tests.fixtures.services import ADMIN_TOKEN, Procs
from tests.fixtures.upstream import FakeUpstream, ThreadedUpstream
from tests.fixtures.waits import eventually

ADMIN_MD = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
FLUSH = "200ms"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Traffic:
    """A client thread sending chat completions; `answered` maps request id -> answer time."""

    url: str
    token: str
    answered: dict[str, float] = field(default_factory=dict)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def _run(self) -> None:
        headers = {"authorization": f"Bearer {self.token}"}
        body = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    answer = client.post("/oai/v1/chat/completions", json=body)
                except httpx.HTTPError:
                    self.errors += 1  # the bridge is restarting: no answer, no record owed
                    self._stop.wait(0.05)
                    continue
                request_id = answer.headers.get("x-aibridge-request-id")
                if request_id:
                    self.answered[request_id] = time.monotonic()
                self._stop.wait(0.01)  # ~50-100 requests/s: a steady flow, not a benchmark


@dataclass
class Stack:
    procs: Procs
    database_url: str
    upstream: ThreadedUpstream
    port: int  # the config service's, kept across restarts
    service: Proc
    member: str = ""

    def start_service(self) -> Proc:
        self.service = self.procs.config_service(
            self.database_url,
            port=self.port,
            AIBRIDGE_PROVIDER_0_TYPE="openai",
            AIBRIDGE_PROVIDER_0_NAME="oai",
            AIBRIDGE_PROVIDER_0_BASE_URL=f"{self.upstream.upstream.url}/v1/",
            AIBRIDGE_PROVIDER_0_KEY="sk-pool-recording-0123456789abcdef",
        )
        return self.service

    def start_bridge(self, **env: str) -> Proc:
        settings = {
            "AIBRIDGE_RECORDING_FLUSH_INTERVAL": FLUSH,
            "AIBRIDGE_RECORDING_TIMEOUT": "2s",
            **env,
        }
        bridge = self.procs.bridge(self.service.target, node_id="rec-bridge", **settings)
        url = bridge_url(bridge)

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        asyncio.run(eventually(ready, 20))
        return bridge

    def stored(self) -> list[str]:
        """Every record id in the database (via UsageService, as the owner), in list order."""
        found: list[str] = []
        token = ""
        with grpc.insecure_channel(self.service.target) as channel:
            stub = pb_grpc.UsageServiceStub(channel)
            while True:
                page = stub.ListInterceptions(
                    pb.ListInterceptionsRequest(page_size=1000, page_token=token),
                    metadata=ADMIN_MD,
                )
                found.extend(r.id for r in page.interceptions)
                token = page.next_page_token
                if not token:
                    return found

    def all_stored(self, answered: dict[str, float], within: float = 30) -> list[str]:
        """Wait until every answered id is stored; the stored ids."""
        ids: list[str] = []

        def done() -> bool:
            ids[:] = self.stored()
            return set(answered) <= set(ids)

        try:
            asyncio.run(eventually(done, within, every=0.25))
        except AssertionError:
            missing = set(answered) - set(ids)
            raise AssertionError(f"{len(missing)} of {len(answered)} answered not stored") from None
        return ids


def bridge_url(bridge: Proc) -> str:
    return str(bridge.ready["url"]).rstrip("/")


@pytest.fixture
def stack(procs: Procs, database_url: str) -> Iterator[Stack]:
    upstream = ThreadedUpstream(FakeUpstream("Hello", models=("m1",))).start()
    try:
        made = Stack(procs, database_url, upstream, free_port(), None)  # type: ignore[arg-type]
        made.start_service()
        with grpc.insecure_channel(made.service.target) as channel:
            made.member = (
                ta_grpc.TokenAdminServiceStub(channel)
                .CreateToken(
                    ta.CreateTokenRequest(principal_name="dev", role=token_pb2.ROLE_MEMBER),
                    metadata=ADMIN_MD,
                )
                .secret
            )
        yield made
    finally:
        upstream.stop()


def run_for(seconds: float) -> None:
    """Let traffic flow for a while (the traffic is the state under test, not awaited)."""
    time.sleep(seconds)


@contextlib.contextmanager
def service_killed_under_traffic(stack: Stack, away: float) -> Iterator[tuple[Proc, Traffic]]:
    """A bridge under traffic whose config service is SIGKILLed, `away` seconds after the kill;
    the traffic stops when the block ends."""
    bridge = stack.start_bridge()
    traffic = Traffic(bridge_url(bridge), stack.member).start()
    try:
        run_for(1)
        stack.service.kill()
        run_for(away)
        yield bridge, traffic
    finally:
        traffic.stop()


@pytest.mark.parametrize("outage", [5, pytest.param(60, marks=pytest.mark.slow)])
def test_every_answer_is_stored_once_after_the_config_service_was_killed(
    stack: Stack, outage: float
) -> None:
    """The config service is SIGKILLed for a while under traffic, then restarted: every answered request is stored exactly once."""
    with service_killed_under_traffic(stack, outage) as (bridge, traffic):
        stack.start_service()
        run_for(1)
    answered_during = len(traffic.answered)
    ids = stack.all_stored(traffic.answered)
    assert len(ids) == len(set(ids))
    assert answered_during > 50
    assert bridge.events("config service is not taking records; spooling them")


@pytest.mark.parametrize("outage", [5, pytest.param(60, marks=pytest.mark.slow)])
def test_a_bridge_stopped_while_the_service_is_away_replays_its_spool_after_restart(
    stack: Stack, outage: float
) -> None:
    """SIGTERM to the bridge while the config service is down spools its queue; restarted after the service is back, it stores every answered request once."""
    with service_killed_under_traffic(stack, outage / 2) as (bridge, traffic):
        pass
    bridge.stop()
    assert bridge.popen.returncode == 0
    assert bridge.events(
        "records spooled at shutdown; replayed at the next start"
    ) or bridge.events("config service is not taking records; spooling them")
    run_for(outage / 2)
    stack.start_service()
    restarted = stack.start_bridge()
    ids = stack.all_stored(traffic.answered)
    assert len(ids) == len(set(ids))
    assert restarted.events("replaying the recording spool")


def test_a_bridge_killed_with_sigkill_loses_at_most_its_last_flush_interval(
    stack: Stack,
) -> None:
    """SIGKILL loses only records answered within about one flush interval (1 s, the default) before the kill; the figure is printed."""
    bridge = stack.start_bridge(AIBRIDGE_RECORDING_FLUSH_INTERVAL="1s")
    traffic = Traffic(bridge_url(bridge), stack.member).start()
    try:
        run_for(2 + random.uniform(0, 1))  # any phase of the flush interval
        killed_at = time.monotonic()
        bridge.kill()
    finally:
        traffic.stop()
    # The batch in flight at the kill may still be committing: read until two reads agree.
    reads: list[set[str]] = [set()]

    def settled() -> bool:
        reads.append(set(stack.stored()))
        return reads[-1] == reads[-2]

    asyncio.run(eventually(settled, 10, every=0.25))
    stored = reads[-1]
    lost = {rid: at for rid, at in traffic.answered.items() if rid not in stored}
    oldest = max((killed_at - at for at in lost.values()), default=0.0)
    rate = len(lost) and len(traffic.answered) / (killed_at - min(traffic.answered.values()))
    print(
        f"\nSIGKILL: {len(lost)} of {len(traffic.answered)} answered records lost "
        f"(~{rate:.0f} req/s); the oldest lost was answered {oldest:.3f} s before the kill "
        "(flush interval 1 s)"
    )
    assert oldest <= 1.0 + 0.5  # one flush interval, plus the batch in flight
