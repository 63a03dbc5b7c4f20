"""Circuit breaker state machine and API dumps (redaction, confinement)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
from dp_fakes import (
    KEY_A,
    MEMBER_TOKEN,
    ConfigServer,
    ManualClock,
    StartBridge,
    anthropic_provider,
    openai_provider,
    provider,
    snapshot,
)
from structlog.testing import capture_logs

from aibridge.config.v1 import provider_pb2 as pb
from data_plane.bridge.breaker import Breaker, BreakerState, Rejected
from data_plane.bridge.settings import BreakerSettings
from data_plane.dump import Dumper, Exchange, safe_component
from tests.fixtures.upstream import FakeUpstream, Reply
from tests.fixtures.waits import eventually

MSG = {"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def test_breaker_opens_half_opens_and_closes() -> None:
    """N failures open the breaker; after the timeout bounded probes close it again."""
    clock = ManualClock()
    breaker = Breaker("p:/v1/messages:m", BreakerSettings(True, 2, 10.0, 5.0, 2), clock)
    for _ in range(2):
        gen = breaker.allow()
        assert isinstance(gen, int)
        breaker.record(gen, True)
    assert breaker.state is BreakerState.OPEN
    rejected = breaker.allow()
    assert isinstance(rejected, Rejected) and rejected.retry_after == 5
    clock.now += 5
    assert breaker.state is BreakerState.HALF_OPEN
    probes = [breaker.allow(), breaker.allow()]
    assert isinstance(breaker.allow(), Rejected)  # only max_requests probes at once
    for gen in probes:
        assert isinstance(gen, int)
        breaker.record(gen, False)
    assert breaker.state is BreakerState.CLOSED


def test_breaker_failure_while_half_open_reopens() -> None:
    """A failed probe re-opens the breaker; successes in between reset the closed count."""
    clock = ManualClock()
    breaker = Breaker("b", BreakerSettings(True, 2, 10.0, 1.0, 1), clock)
    for failure in (True, False, True):
        gen = breaker.allow()
        assert isinstance(gen, int)
        breaker.record(gen, failure)
    assert breaker.state is BreakerState.CLOSED
    gen = breaker.allow()
    assert isinstance(gen, int)
    breaker.record(gen, True)
    assert breaker.state is BreakerState.OPEN
    clock.now += 1
    gen = breaker.allow()
    assert isinstance(gen, int)
    breaker.record(gen, True)
    assert breaker.state is BreakerState.OPEN


async def test_breaker_through_the_bridge(
    config_service: ConfigServer, upstream: FakeUpstream, start_bridge: StartBridge
) -> None:
    """Consecutive 529s open the breaker (503, Retry-After, Anthropic body); a probe closes it."""
    await config_service.service.publish(snapshot("1", [anthropic_provider(upstream)]))
    bridge = await start_bridge(
        wait_version="1",
        AIBRIDGE_CIRCUIT_BREAKER_ENABLED="true",
        AIBRIDGE_CIRCUIT_BREAKER_FAILURE_THRESHOLD="2",
        AIBRIDGE_CIRCUIT_BREAKER_TIMEOUT="300ms",
        AIBRIDGE_CIRCUIT_BREAKER_MAX_REQUESTS="1",
    )
    upstream.responder = lambda seen: Reply(status=529, body=b'{"type":"error"}')
    async with httpx.AsyncClient(base_url=bridge.url, headers={"x-api-key": MEMBER_TOKEN}) as http:
        for _ in range(2):
            assert (await http.post("/anthropic/v1/messages", json=MSG)).status_code == 529
        refused = await http.post("/anthropic/v1/messages", json=MSG)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json() == {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "circuit breaker is open"},
        }
        assert len(upstream.seen) == 2
        other_model = await http.post("/anthropic/v1/messages", json={**MSG, "model": "other"})
        assert other_model.status_code == 529  # breakers are per model
        metrics = (await http.get("/metrics")).text
        assert (
            'aibridged_circuit_breaker_state{model="claude-test",provider="anthropic",'
            'route="/v1/messages"} 1.0' in metrics
        )
        breakers = bridge.app.table.providers["anthropic"].breakers
        assert breakers is not None
        breaker = breakers.breakers["/v1/messages", "claude-test"]
        await eventually(lambda: breaker.state is BreakerState.HALF_OPEN, within=5)
        upstream.responder = lambda seen: Reply(body=b"{}")
        assert (await http.post("/anthropic/v1/messages", json=MSG)).status_code == 200
        assert (await http.post("/anthropic/v1/messages", json=MSG)).status_code == 200


def test_safe_component_blocks_traversal() -> None:
    """Path components never contain separators or leading dots, and are never empty."""
    for hostile in ("..", "../../etc", "/abs/path", "a/../../b", "..\\x", "", ".hidden", "."):
        part = safe_component(hostile)
        assert "/" not in part and "\\" not in part
        assert not part.startswith(".") and part
    assert safe_component("anthropic/claude-3") == "anthropic-claude-3"


async def test_dump_redacts_and_stays_inside(tmp_path: Path) -> None:
    """Dumps mask credential headers and land inside the dump directory whatever the names."""
    dumper = Dumper(tmp_path / "dumps")
    exchange = Exchange(
        provider="../../evil",
        model="../../../etc/passwd",
        request_id="../id",
        method="POST",
        target="/v1/messages",
        request_headers=[
            ("x-api-key", "sk-ant-secret-value-1234567890"),
            ("X-AIBridge-Token", MEMBER_TOKEN),
            ("content-type", "application/json"),
        ],
        request_body=b'{"model":"m"}',
        status=200,
        response_headers=[("set-cookie", "session=abcdefghijklmnopqrstuvwxyz")],
        response_body=b"data: ok\n\n",
    )
    await dumper.dump(exchange)
    files = sorted(p for p in (tmp_path / "dumps").rglob("*") if p.is_file())
    assert [f.suffixes[-2:] for f in files] == [[".req", ".txt"], [".resp", ".txt"]]
    for f in files:
        assert f.resolve().is_relative_to((tmp_path / "dumps").resolve())
    request = files[0].read_text()
    assert "sk-ant-secret-value-1234567890" not in request and MEMBER_TOKEN not in request
    assert "X-Api-Key: sk-a...7890" in request
    assert request.index("Content-Type") < request.index("X-Aibridge-Token")  # sorted
    assert "abcdefghijklmnopqrstuvwxyz" not in files[1].read_text()


async def dumped_call(
    config_service: ConfigServer,
    start_bridge: StartBridge,
    dumps: Path,
    target: pb.Provider,
    model: str,
) -> tuple[httpx.Response, list[Path]]:
    """One chat completion through a bridge dumping into `dumps`: its answer and the two files
    dumped under <dumps>/openai/<model folder>/ (written once the client has its answer)."""
    await config_service.service.publish(snapshot("1", [target]))
    bridge = await start_bridge(wait_version="1", AIBRIDGE_DUMP_DIR=str(dumps))
    async with httpx.AsyncClient(base_url=bridge.url) as http:
        response = await http.post(
            "/openai/v1/chat/completions",
            headers={"authorization": f"Bearer {MEMBER_TOKEN}"},
            json={"model": model, "messages": []},
        )
    folder = dumps / "openai" / model.replace("/", "-")

    def written() -> list[Path]:  # a dump is a .partial file until it is renamed
        return sorted(folder.glob("*.txt")) if folder.is_dir() else []

    await eventually(lambda: len(written()) == 2, within=2)
    return response, written()


async def test_dump_through_the_bridge(
    config_service: ConfigServer, upstream: FakeUpstream, start_bridge: StartBridge, tmp_path: Path
) -> None:
    """An intercepted call is dumped under <dir>/<provider>/<model>/ without any secret."""
    response, files = await dumped_call(
        config_service, start_bridge, tmp_path, openai_provider(upstream), "org/gpt-test"
    )
    assert response.status_code == 200
    assert [f.parent for f in files] == [tmp_path / "openai" / "org-gpt-test"] * 2
    text = "".join(f.read_text() for f in files)
    assert MEMBER_TOKEN not in text and KEY_A not in text
    assert '"model": "org/gpt-test"' in text and "HTTP/1.1 200" in text


async def test_dump_of_an_upstream_transport_error(
    config_service: ConfigServer, start_bridge: StartBridge, tmp_path: Path
) -> None:
    """An upstream that cannot be reached leaves the request and a .req_error.txt naming why."""
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = provider("openai", pb.PROVIDER_TYPE_OPENAI, f"http://127.0.0.1:{port}/v1/", [KEY_A])
    response, (request, error) = await dumped_call(
        config_service, start_bridge, tmp_path, dead, "gpt-test"
    )
    assert response.status_code == 502
    assert request.name.endswith(".req.txt") and error.name.endswith(".req_error.txt")
    assert request.name.removesuffix(".req.txt") == error.name.removesuffix(".req_error.txt")
    assert error.read_text().startswith("ConnectError: ")
    assert KEY_A not in error.read_text() and MEMBER_TOKEN not in request.read_text()


def test_dump_failure_only_warns(tmp_path: Path) -> None:
    """A dump directory that cannot be written does not fail the request: one warning says so."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    dumper = Dumper(blocker)
    with capture_logs() as logs:
        asyncio.run(dumper.dump(Exchange("p", "m", "req-1", "GET", "/", [], b"")))
    (warning,) = [entry for entry in logs if entry["event"] == "api dump failed"]
    assert warning["log_level"] == "warning"
    assert (warning["provider"], warning["request_id"]) == ("p", "req-1")
    assert str(blocker) in warning["error"]
    assert blocker.read_text() == "x"
