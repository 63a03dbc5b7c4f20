"""Upstream faults through a real bridge: stalls, resets mid-stream, 5xx and 429 storms.

The bridge must answer with the documented statuses (DESIGN §7): 502 for a transport
failure before the response, 504 for a timeout, 503 + Retry-After while a breaker is
open, 429 + Retry-After for an exhausted pool, 502 when every key failed authentication;
a stream that breaks after its first byte is cut, never retried nor turned into a 500.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from aibridge.config.v1 import provider_pb2 as pb
from data_plane.bridge.server import Bridge
from data_plane.bridge.settings import BridgeSettings
from tests.fixtures.services import BRIDGE_TOKEN
from tests.fixtures.upstream import FakeUpstream, Handler, Seen, http_response, reset
from tests.fixtures.waits import eventually
from tests.resilience.harness import (
    Proc,
    Procs,
    bridge_ready,
    bridge_url,
    serve_providers,
)

KEYS = ["sk-upstream-fault-key-a-000000000000", "sk-upstream-fault-key-b-111111111111"]
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}


def answering(status: int, body: bytes) -> Handler:
    """An upstream handler that answers every request with `status` and `body`."""

    async def answer(req: Seen, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(http_response(status, body))
        await w.drain()

    return answer


@dataclass
class Stack:
    bridge: Proc
    member: str
    upstream: FakeUpstream

    def client(self, timeout: float = 10) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=bridge_url(self.bridge),
            headers={"authorization": f"Bearer {self.member}"},
            timeout=timeout,
        )

    async def storm(
        self, name: str, handler: Handler, path: str, body: object, times: int
    ) -> list[httpx.Response]:
        """`times` requests to provider `name` at `path`, its upstream answering with `handler`."""
        self.upstream.handlers[name] = handler
        async with self.client() as http:
            return [await http.post(f"/{name}{path}", json=body) for _ in range(times)]

    def no_500s(self) -> None:
        errors = [r for r in self.bridge.records() if r.get("level") in ("error", "critical")]
        statuses = [r.get("status") for r in self.bridge.events("request")]
        assert 500 not in statuses, statuses
        assert not [e for e in errors if "Exception" in json.dumps(e)], errors


@pytest.fixture
async def stack(procs: Procs, upstream: FakeUpstream, sqlite_url: str) -> Stack:
    openai = [
        (name, pb.PROVIDER_TYPE_OPENAI, f"{upstream.url}/{name}/v1/", KEYS)
        for name in ("storm", "limited", "reset", "stall", "denied")
    ]
    anthropic = ("overloaded", pb.PROVIDER_TYPE_ANTHROPIC, f"{upstream.url}/overloaded/", KEYS)
    served = await serve_providers(procs, sqlite_url, *openai, anthropic)
    target, member, version = served.target, served.member, served.version
    bridge = await asyncio.to_thread(
        procs.bridge,
        target,
        "bridge-faults",
        AIBRIDGE_CIRCUIT_BREAKER_ENABLED="true",
        AIBRIDGE_CIRCUIT_BREAKER_FAILURE_THRESHOLD="3",
        AIBRIDGE_CIRCUIT_BREAKER_TIMEOUT="30s",
    )

    await bridge_ready(bridge, version)
    return Stack(bridge, member, upstream)


async def test_5xx_storm_trips_the_breaker(stack: Stack) -> None:
    """A storm of upstream 503s is passed through until the breaker trips, then answered 503 with Retry-After without reaching the upstream."""
    unavailable = answering(503, b'{"error":{"message":"down"}}')
    answers = await stack.storm("storm", unavailable, "/v1/chat/completions", CHAT, 20)
    statuses = [a.status_code for a in answers]
    assert statuses == [503] * 20
    assert len([s for s in stack.upstream.seen if s.path.startswith("/storm")]) == 3
    tripped = answers[3:]
    assert all(int(a.headers["retry-after"]) > 0 for a in tripped)
    assert all(a.json()["error"]["code"] == "service_unavailable" for a in tripped)
    stack.no_500s()


async def test_529_storm_trips_the_anthropic_breaker(stack: Stack) -> None:
    """Anthropic 529 (overloaded) answers trip the breaker too; the client then gets an Anthropic-format 503 with Retry-After."""
    overloaded = answering(
        529, b'{"type":"error","error":{"type":"overloaded_error","message":"busy"}}'
    )
    answers = await stack.storm("overloaded", overloaded, "/v1/messages", MESSAGES, 8)
    assert [a.status_code for a in answers] == [529] * 3 + [503] * 5
    assert answers[-1].json()["type"] == "error" and "retry-after" in answers[-1].headers
    stack.no_500s()


async def test_429_storm_exhausts_the_pool(stack: Stack) -> None:
    """When every key is rate limited the bridge answers 429 with the shortest Retry-After and stops calling the upstream until a key cools down."""

    async def limited(req: Seen, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        key = req.headers["authorization"].removeprefix("Bearer ")
        wait = "7" if key == KEYS[0] else "3"
        w.write(http_response(429, b'{"error":{"message":"slow down"}}', [("retry-after", wait)]))
        await w.drain()

    answers = await stack.storm("limited", limited, "/v1/chat/completions", CHAT, 30)
    assert {a.status_code for a in answers} == {429}
    assert all(1 <= int(a.headers["retry-after"]) <= 3 for a in answers), [
        a.headers.get("retry-after") for a in answers
    ]
    # One try per key, then the pool answers for itself.
    assert len([s for s in stack.upstream.seen if s.path.startswith("/limited")]) == 2
    stack.no_500s()


async def test_401_storm_answers_502(stack: Stack) -> None:
    """When every pooled key is refused (401) the client gets 502, not the upstream's 401 nor a 500."""
    denied = answering(401, b'{"error":{"message":"bad key"}}')
    answers = await stack.storm("denied", denied, "/v1/chat/completions", CHAT, 5)
    assert [a.status_code for a in answers] == [502] * 5
    assert answers[0].json()["error"]["code"] == "key_pool_unavailable"
    stack.no_500s()


async def test_connection_reset_before_and_during_the_response(stack: Stack) -> None:
    """A reset before the response is a 502 with the provider's error body; a reset mid-stream cuts the client's stream after the bytes already relayed, never a retry nor a 500."""
    events = [b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'] * 3

    async def resets(req: Seen, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if not req.json().get("stream"):
            reset(w)
            return
        w.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        for event in events:
            w.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            await w.drain()
            await asyncio.sleep(0.05)  # pace: events arrive apart
        reset(w)

    stack.upstream.handlers["reset"] = resets
    async with stack.client() as http:
        early = await http.post("/reset/v1/chat/completions", json=CHAT)
        assert early.status_code == 502
        assert early.json()["error"]["code"] == "upstream_error"
        received = b""
        with pytest.raises(httpx.HTTPError):  # noqa: PT012 - the break comes while reading
            async with http.stream(
                "POST", "/reset/v1/chat/completions", json={**CHAT, "stream": True}
            ) as response:
                assert response.status_code == 200
                async for chunk in response.aiter_raw():
                    received += chunk
        assert received == b"".join(events)
        # The bridge still serves after both resets.
        assert (await http.post("/storm/v1/chat/completions", json=CHAT)).status_code == 200
    streamed = [
        s for s in stack.upstream.seen if s.path.startswith("/reset") and s.json().get("stream")
    ]
    assert len(streamed) == 1  # never retried once the first byte reached the client
    stack.no_500s()


async def test_stalled_upstream_and_client_timeout(stack: Stack) -> None:
    """A client that gives up on a stalled upstream frees the upstream connection and is recorded as 499; the bridge keeps serving."""
    stalled = asyncio.Event()

    async def stall(req: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        stalled.set()
        await reader.read()  # until the bridge hangs up

    stack.upstream.handlers["stall"] = stall
    before = stack.upstream.open_connections
    async with stack.client(timeout=1.0) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/stall/v1/chat/completions", json=CHAT)
    assert stalled.is_set()
    await eventually(lambda: stack.upstream.open_connections <= before, within=5)
    await eventually(lambda: 499 in [r.get("status") for r in stack.bridge.events("request")])
    stack.no_500s()


async def test_upstream_timeout_is_504(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str, tmp_path: Path
) -> None:
    """An upstream that does not answer within the bridge's read timeout is a 504 in the provider's format (the in-process bridge with a 1 s timeout stands in for the 600 s default)."""
    served = await serve_providers(
        procs, sqlite_url, ("slow", pb.PROVIDER_TYPE_OPENAI, f"{upstream.url}/slow/v1/", KEYS)
    )
    member, version = served.member, served.version

    async def never(req: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await reader.read()

    upstream.handlers["slow"] = never
    settings = BridgeSettings.from_env(
        {
            "AIBRIDGE_BRIDGE_TOKEN": BRIDGE_TOKEN,
            "AIBRIDGE_BRIDGE_LISTEN": "127.0.0.1:0",
            "AIBRIDGE_CONFIG_SERVICE": served.target,
            "AIBRIDGE_DATA_DIR": str(tmp_path / "bridge-data"),
        }
    )
    bridge = Bridge(settings, bedrock_factory=None)
    bridge.http.timeout = httpx.Timeout(1.0)
    await bridge.start()
    try:
        await eventually(lambda: bridge.app.table.version == version)
        headers = {"authorization": f"Bearer {member}"}
        async with httpx.AsyncClient(base_url=bridge.url, headers=headers, timeout=10) as http:
            answer = await http.post("/slow/v1/chat/completions", json=CHAT)
    finally:
        await bridge.stop()
    assert answer.status_code == 504
    assert answer.json()["error"]["code"] == "upstream_error"
