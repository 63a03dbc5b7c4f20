"""Routing, client authentication, health and snapshot swaps of the bridge app."""

from __future__ import annotations

import httpx
import pytest
from dp_fakes import (
    AUDITOR_TOKEN,
    CHAT,
    KEY_A,
    MEMBER_TOKEN,
    OWNER_TOKEN,
    ConfigServer,
    Serve,
    StartBridge,
    anthropic_provider,
    gateway_tokens,
    openai_provider,
    snapshot,
    wait_for_version,
)

from aibridge.config.v1 import provider_pb2 as pb
from data_plane.bridge.app import MAX_BODY
from tests.fixtures.upstream import FakeUpstream, Reply, Seen
from tests.fixtures.waits import eventually


@pytest.fixture
async def url(serve: Serve, both_providers: tuple[pb.Provider, pb.Provider]) -> str:
    """A bridge serving an OpenAI and an Anthropic provider, both on the fake upstream."""
    return await serve(*both_providers)


async def test_readyz_before_and_after_snapshot(
    config_service: ConfigServer, upstream: FakeUpstream, start_bridge: StartBridge
) -> None:
    """/readyz is 503 until a snapshot is applied and 200 after; /healthz is always 200."""
    bridge = await start_bridge()
    async with httpx.AsyncClient(base_url=bridge.url) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 503
        await config_service.service.publish(snapshot("7", [openai_provider(upstream)]))
        await wait_for_version(bridge, "7")
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["version"] == "7"
        metrics = (await http.get("/metrics")).text
    assert 'aibridged_snapshot_version_info{version="7"} 1.0' in metrics
    assert 'aibridged_key_pool_keys{provider="openai",state="valid"} 1.0' in metrics


async def test_unknown_provider_and_route_are_404(url: str, upstream: FakeUpstream) -> None:
    """Unknown providers answer 404 naming the providers there are (to gateway users only); unserved routes the path."""
    async with httpx.AsyncClient(base_url=url) as http:
        nope = await http.post(
            "/nope/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {MEMBER_TOKEN}"},
        )
        assert nope.status_code == 404
        assert nope.json()["error"] == {
            "message": "no provider named 'nope'; configured: anthropic, openai",
            "type": "not_found_error",
            "code": "provider_not_found",
        }
        for headers in ({}, {"authorization": "Bearer not-a-gateway-token"}):
            scan = await http.post("/nope/v1/chat/completions", json=CHAT, headers=headers)
            assert scan.status_code == 404
            message = scan.json()["error"]["message"]
            assert "openai" not in message and "anthropic" not in message
            assert "gateway token" in message
        legacy = await http.post(
            "/openai/v1/completions", json=CHAT, headers={"authorization": f"Bearer {MEMBER_TOKEN}"}
        )
        assert legacy.status_code == 404
        assert "POST /openai/v1/completions" in legacy.json()["error"]["message"]
        anth = await http.get("/anthropic/v1/files")
        assert anth.json()["type"] == "error"  # the provider's own error format
    assert upstream.seen == []


async def test_unknown_provider_answers_in_the_clients_api_shape(
    url: str, upstream: FakeUpstream
) -> None:
    """An Anthropic client with a base URL missing the provider segment gets Anthropic's 404."""
    async with httpx.AsyncClient(base_url=url) as http:
        # Claude Code with ANTHROPIC_BASE_URL=<bridge> (no /anthropic): POST /v1/messages.
        lost = await http.post(
            "/v1/messages",
            json={"model": "claude", "max_tokens": 8, "messages": []},
            headers={"anthropic-version": "2023-06-01", "x-api-key": MEMBER_TOKEN},
        )
    assert lost.status_code == 404
    assert lost.json() == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "no provider named 'v1'; configured: anthropic, openai",
        },
    }
    assert upstream.seen == []


async def test_body_over_32_mib_is_413(url: str, upstream: FakeUpstream) -> None:
    """A body over 32 MiB is refused with 413 and never reaches the upstream."""
    async with httpx.AsyncClient(base_url=url) as http:
        big = await http.post(
            "/openai/v1/chat/completions",
            content=b"x" * (MAX_BODY + 1),
            headers={"authorization": f"Bearer {MEMBER_TOKEN}"},
        )
        assert big.status_code == 413

        async def chunks() -> object:
            for _ in range(33):
                yield b"y" * (1024 * 1024)

        chunked = await http.post(
            "/openai/v1/chat/completions",
            content=chunks(),  # type: ignore[arg-type]
            headers={"authorization": f"Bearer {MEMBER_TOKEN}"},
        )
        assert chunked.status_code == 413
    assert upstream.seen == []


async def test_client_auth(url: str, upstream: FakeUpstream) -> None:
    """Members get through (Bearer or X-Api-Key); owners, auditors and strangers get 401/403."""
    path = "/openai/v1/chat/completions"
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.post(path, json=CHAT)).status_code == 401
        bad = await http.post(path, json=CHAT, headers={"authorization": "Bearer nope"})
        assert bad.status_code == 401
        assert bad.json()["error"]["type"] == "authentication_error"
        auditor = await http.post(
            path, json=CHAT, headers={"authorization": f"Bearer {AUDITOR_TOKEN}"}
        )
        assert auditor.status_code == 403
        owner = await http.post(path, json=CHAT, headers={"x-api-key": OWNER_TOKEN})
        assert owner.status_code == 403
        member = await http.post(path, json=CHAT, headers={"x-api-key": MEMBER_TOKEN})
        assert member.status_code == 200
        anth = await http.post("/anthropic/v1/messages", json=CHAT)
        assert anth.status_code == 401
        assert anth.json()["error"]["type"] == "authentication_error"
    assert len(upstream.seen) == 1
    assert upstream.seen[0].headers["authorization"] == f"Bearer {KEY_A}"


async def test_revoked_token_refused_after_next_snapshot(
    config_service: ConfigServer, upstream: FakeUpstream, start_bridge: StartBridge
) -> None:
    """A token dropped from the snapshot is refused as soon as that snapshot is applied."""
    bridge = await start_bridge()
    providers = [openai_provider(upstream)]
    await config_service.service.publish(snapshot("1", providers))
    await wait_for_version(bridge, "1")
    headers = {"authorization": f"Bearer {MEMBER_TOKEN}"}
    async with httpx.AsyncClient(base_url=bridge.url, headers=headers) as http:
        assert (await http.post("/openai/v1/chat/completions", json=CHAT)).status_code == 200
        others = [t for t in gateway_tokens() if t.principal_name != "member"]
        await config_service.service.publish(snapshot("2", providers, tokens=others))
        await wait_for_version(bridge, "2")
        assert (await http.post("/openai/v1/chat/completions", json=CHAT)).status_code == 401


async def test_disabled_and_error_providers_answer_503(
    config_service: ConfigServer, upstream: FakeUpstream, start_bridge: StartBridge
) -> None:
    """A disabled provider answers 503 provider_disabled; an ERROR one 503 with its reason."""
    disabled = openai_provider(upstream, status=pb.PROVIDER_STATUS_DISABLED)
    broken = anthropic_provider(upstream, status=pb.PROVIDER_STATUS_ERROR, reason="cannot decrypt")
    await config_service.service.publish(snapshot("1", [disabled, broken]))
    bridge = await start_bridge(wait_version="1")
    async with httpx.AsyncClient(base_url=bridge.url) as http:
        off = await http.post("/openai/v1/chat/completions", json=CHAT)
        assert off.status_code == 503
        assert off.json()["error"]["code"] == "provider_disabled"
        broken = await http.post("/anthropic/v1/messages", json=CHAT)
        assert broken.status_code == 503
        assert "cannot decrypt" in broken.json()["error"]["message"]


async def test_provider_removed_while_streaming(
    config_service: ConfigServer, url: str, upstream: FakeUpstream
) -> None:
    """A stream in flight finishes on its table while a new snapshot removes its provider."""
    slow = Reply(
        headers={"content-type": "text/event-stream"},
        chunks=[b"data: {}\n\n"] * 5 + [b"data: [DONE]\n\n"],
        gap=0.05,
    )
    upstream.responder = lambda seen: slow
    headers = {"authorization": f"Bearer {MEMBER_TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers) as http:
        async with http.stream(
            "POST", "/openai/v1/chat/completions", json={**CHAT, "stream": True}
        ) as response:
            body = response.aiter_raw()
            first = await anext(body)
            await config_service.service.publish(snapshot("2", [anthropic_provider(upstream)]))
            rest = b"".join([c async for c in body])
        assert first + rest == b"data: {}\n\n" * 5 + b"data: [DONE]\n\n"

        async def openai_gone() -> bool:
            after = await http.post("/openai/v1/chat/completions", json=CHAT)
            return after.status_code == 404

        await eventually(openai_gone)


async def test_client_disconnect_cancels_upstream(url: str, upstream: FakeUpstream) -> None:
    """A client that goes away mid-stream makes the bridge drop the upstream request."""

    async def endless(seen: Seen) -> Reply:
        return Reply(
            headers={"content-type": "text/event-stream"}, chunks=[b"data: {}\n\n"] * 200, gap=0.01
        )

    upstream.responder = endless
    headers = {"authorization": f"Bearer {MEMBER_TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers) as http:
        async with http.stream(
            "POST", "/openai/v1/chat/completions", json={**CHAT, "stream": True}
        ) as response:
            await anext(response.aiter_raw())

        async def recorded_as_499() -> bool:
            return 'status="499"' in (await http.get("/metrics")).text

        # The bridge records the request as 499 (client closed) well before 200 chunks (2 s).
        await eventually(recorded_as_499, within=1.5)
