"""Key pool behaviour: unit rules with a fake clock, and failover through the bridge."""

from __future__ import annotations

import httpx
from dp_fakes import (
    AUTH,
    CHAT,
    KEY_A,
    KEY_B,
    MEMBER_TOKEN,
    ConfigServer,
    ManualClock,
    Serve,
    StartBridge,
    anthropic_provider,
    openai_provider,
    snapshot,
    wait_for_version,
)

from aibridge.config.v1.provider_pb2 import Provider
from data_plane.bridge.keypool import KeyPool, retry_after_seconds
from tests.fixtures.upstream import FakeUpstream, Reply, Seen
from tests.fixtures.waits import eventually


def test_cooldowns_follow_retry_headers() -> None:
    """429 cools for retry-after-ms, else Retry-After, else 60 s; 401 for 60 s."""
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "9"}) == 9.0
    assert retry_after_seconds({}) is None
    clock = ManualClock(1000.0)
    pool = KeyPool("p", ["a", "b", "c"], clock=clock)
    assert pool.report(0, 429, {"retry-after": "5"})
    assert pool.report(1, 401, {})
    assert not pool.report(2, 500, {})
    assert [i for i, _ in pool.walk()] == [2]
    clock.now += 5
    assert [i for i, _ in pool.walk()] == [0, 2]
    clock.now += 55
    assert [i for i, _ in pool.walk()] == [0, 1, 2]


def test_later_cooldown_never_shortens() -> None:
    """A shorter cooldown reported later leaves a longer one in place."""
    clock = ManualClock(1000.0)
    pool = KeyPool("p", ["a"], clock=clock)
    pool.report(0, 429, {"retry-after": "120"})
    pool.report(0, 429, {"retry-after": "1"})
    clock.now += 60
    assert list(pool.walk()) == []
    assert pool.exhausted().retry_after == 60


def test_exhaustion_outcomes() -> None:
    """Exhausted: 429 with the shortest rate-limit wait, or 502 when every key failed auth."""
    clock = ManualClock(1000.0)
    limited = KeyPool("p", ["a", "b"], clock=clock)
    limited.report(0, 429, {"retry-after": "30"})
    limited.report(1, 429, {"retry-after-ms": "2500"})
    assert (limited.exhausted().status, limited.exhausted().retry_after) == (429, 3)
    unauthorized = KeyPool("p", ["a", "b"], clock=clock)
    unauthorized.report(0, 401, {})
    unauthorized.report(1, 401, {})
    assert unauthorized.exhausted().status == 502


def _two_keys(upstream: FakeUpstream) -> tuple[Provider, Provider]:
    """Provider `openai` and provider `anthropic`, each with keys A and B in its pool."""
    return (
        openai_provider(upstream, keys=[KEY_A, KEY_B]),
        anthropic_provider(upstream, keys=[KEY_A, KEY_B]),
    )


def _key_of(seen: Seen) -> str:
    return seen.headers.get("x-api-key") or seen.headers["authorization"].removeprefix("Bearer ")


async def test_failover_on_429_and_401(serve: Serve, upstream: FakeUpstream) -> None:
    """A 429 or 401 on the first key moves the request to the next key; the client sees 200."""
    url = await serve(*_two_keys(upstream))

    def reply(seen: Seen) -> Reply:
        if _key_of(seen) == KEY_A:
            status = 429 if seen.path == "/v1/chat/completions" else 401
            return Reply(status=status, body=b'{"error":"no"}', headers={"retry-after": "30"})
        return Reply(body=b'{"ok":true}')

    upstream.responder = reply
    async with httpx.AsyncClient(base_url=url, headers=AUTH) as http:
        first = await http.post("/openai/v1/chat/completions", json=CHAT)
        assert first.status_code == 200
        assert [_key_of(s) for s in upstream.seen] == [KEY_A, KEY_B]
        second = await http.post("/openai/v1/chat/completions", json=CHAT)
        assert second.status_code == 200
        assert _key_of(upstream.seen[-1]) == KEY_B  # key A is cooling down
        anth = await http.post("/anthropic/v1/messages", json=CHAT)
        assert anth.status_code == 200
        assert [_key_of(s) for s in upstream.seen[-2:]] == [KEY_A, KEY_B]
        metrics = (await http.get("/metrics")).text
    assert 'aibridged_key_pool_keys{provider="openai",state="rate_limited"} 1.0' in metrics
    assert 'aibridged_key_pool_keys{provider="anthropic",state="unauthorized"} 1.0' in metrics


async def test_exhausted_pool_429_then_502(serve: Serve, upstream: FakeUpstream) -> None:
    """Every key rate limited → 429 with Retry-After; every key unauthorized → 502."""
    url = await serve(*_two_keys(upstream))

    def reply(seen: Seen) -> Reply:
        if seen.path == "/v1/chat/completions":
            wait = "7" if _key_of(seen) == KEY_A else "3"
            return Reply(status=429, body=b"{}", headers={"retry-after": wait})
        return Reply(status=401, body=b"{}")

    upstream.responder = reply
    async with httpx.AsyncClient(base_url=url, headers=AUTH) as http:
        limited = await http.post("/openai/v1/chat/completions", json=CHAT)
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "3"
        assert limited.json()["error"]["type"] == "rate_limit_error"
        denied = await http.post("/anthropic/v1/messages", json=CHAT)
        assert denied.status_code == 502
        assert denied.json()["error"]["message"].startswith("all configured keys failed auth")
    assert len(upstream.seen) == 4


async def test_byok_passes_key_through_without_failover(
    serve: Serve, upstream: FakeUpstream
) -> None:
    """BYOK sends the client's own key untouched, never the gateway token, and never fails over."""
    url = await serve(*_two_keys(upstream))
    upstream.responder = lambda seen: Reply(status=429, body=b'{"e":1}')
    headers = {"x-aibridge-token": MEMBER_TOKEN, "authorization": "Bearer sk-my-own"}
    async with httpx.AsyncClient(base_url=url, headers=headers) as http:
        response = await http.post("/openai/v1/chat/completions", json=CHAT)
    assert response.status_code == 429
    assert response.content == b'{"e":1}'  # the upstream's answer, unchanged
    assert len(upstream.seen) == 1
    assert upstream.seen[0].headers["authorization"] == "Bearer sk-my-own"
    assert "x-aibridge-token" not in upstream.seen[0].headers


async def test_byok_refused_when_disabled(serve: Serve, upstream: FakeUpstream) -> None:
    """With AIBRIDGE_ALLOW_BYOK=false a BYOK request is refused with 403."""
    url = await serve(*_two_keys(upstream), AIBRIDGE_ALLOW_BYOK="false")
    headers = {"x-aibridge-token": MEMBER_TOKEN, "x-api-key": "sk-ant-mine"}
    async with httpx.AsyncClient(base_url=url, headers=headers) as http:
        response = await http.post("/anthropic/v1/messages", json=CHAT)
    assert response.status_code == 403
    assert "BYOK" in response.json()["error"]["message"]
    assert upstream.seen == []


async def test_keyless_provider_needs_byok(
    config_service: ConfigServer, upstream: FakeUpstream, start_bridge: StartBridge
) -> None:
    """A keyless provider serves BYOK only, and is left out (reported) when BYOK is off."""
    await config_service.service.publish(snapshot("1", [openai_provider(upstream, keys=[])]))
    bridge = await start_bridge(wait_version="1")
    async with httpx.AsyncClient(base_url=bridge.url) as http:
        pooled = await http.post("/openai/v1/chat/completions", json=CHAT, headers=AUTH)
        assert pooled.status_code == 401
        byok = await http.post(
            "/openai/v1/chat/completions",
            json=CHAT,
            headers={"x-aibridge-token": MEMBER_TOKEN, "authorization": "Bearer sk-mine"},
        )
        assert byok.status_code == 200
    await start_bridge(wait_version="1", AIBRIDGE_ALLOW_BYOK="false")
    reports = config_service.service.reports
    await eventually(lambda: any(r.node_id == "test-bridge-1" for r in reports))
    report = next(r for r in reports if r.node_id == "test-bridge-1")
    assert report.applied
    assert "BYOK is not enabled" in report.errors[0].message


async def test_byok_follows_the_snapshot(
    config_service: ConfigServer, upstream: FakeUpstream, start_bridge: StartBridge
) -> None:
    """BYOK off in the snapshot is off on a bridge left at its default; on again when allowed."""
    snap = snapshot("1", [openai_provider(upstream), openai_provider(upstream, "keyless", keys=[])])
    snap.allow_byok = False
    await config_service.service.publish(snap)
    bridge = await start_bridge(wait_version="1")
    own = {"x-aibridge-token": MEMBER_TOKEN, "authorization": "Bearer sk-mine"}
    async with httpx.AsyncClient(base_url=bridge.url) as http:
        refused = await http.post("/openai/v1/chat/completions", json=CHAT, headers=own)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "byok_disabled"
        keyless = await http.post("/keyless/v1/chat/completions", json=CHAT, headers=own)
        assert keyless.status_code == 503
        assert "BYOK is not enabled" in keyless.json()["error"]["message"]
        assert upstream.seen == []
        snap.version, snap.allow_byok = "2", True
        await config_service.service.publish(snap)
        await wait_for_version(bridge, "2")
        assert (await http.post("/openai/v1/chat/completions", json=CHAT, headers=own)).is_success
        assert (await http.post("/keyless/v1/chat/completions", json=CHAT, headers=own)).is_success


async def test_pool_state_survives_unchanged_snapshot(
    config_service: ConfigServer, upstream: FakeUpstream, start_bridge: StartBridge
) -> None:
    """A new snapshot with the same keys keeps the cooldowns; changed keys start fresh."""
    await config_service.service.publish(
        snapshot("1", [openai_provider(upstream, keys=[KEY_A, KEY_B])])
    )
    bridge = await start_bridge(wait_version="1")
    upstream.responder = lambda seen: Reply(
        status=429 if _key_of(seen) == KEY_A else 200, body=b"{}"
    )
    async with httpx.AsyncClient(base_url=bridge.url, headers=AUTH) as http:
        await http.post("/openai/v1/chat/completions", json=CHAT)
        await config_service.service.publish(
            snapshot(
                "2", [openai_provider(upstream, keys=[KEY_A, KEY_B]), anthropic_provider(upstream)]
            )
        )
        await wait_for_version(bridge, "2")
        upstream.seen.clear()
        await http.post("/openai/v1/chat/completions", json=CHAT)
        assert [_key_of(s) for s in upstream.seen] == [KEY_B]  # A still cooling
        await config_service.service.publish(
            snapshot("3", [openai_provider(upstream, keys=[KEY_A, KEY_B, "sk-new-key-c"])])
        )
        await wait_for_version(bridge, "3")
        upstream.seen.clear()
        await http.post("/openai/v1/chat/completions", json=CHAT)
        assert [_key_of(s) for s in upstream.seen] == [KEY_A, KEY_B]  # a fresh pool


async def test_copilot_is_always_byok(
    config_service: ConfigServer, upstream: FakeUpstream, start_bridge: StartBridge
) -> None:
    """Copilot has no pool: the user's own Authorization goes through, a gateway token alone is 401."""
    from dp_fakes import provider

    from aibridge.config.v1 import provider_pb2 as pb

    await config_service.service.publish(
        snapshot("1", [provider("copilot", pb.PROVIDER_TYPE_COPILOT, upstream.url)])
    )
    bridge = await start_bridge(wait_version="1")
    async with httpx.AsyncClient(base_url=bridge.url) as http:
        pooled = await http.post("/copilot/chat/completions", json=CHAT, headers=AUTH)
        assert pooled.status_code == 401
        assert "Copilot" in pooled.json()["error"]["message"]
        byok = await http.post(
            "/copilot/chat/completions",
            json=CHAT,
            headers={"x-aibridge-token": MEMBER_TOKEN, "authorization": "Bearer ghu_mine"},
        )
        assert byok.status_code == 200
    assert upstream.seen[-1].path == "/chat/completions"
    assert upstream.seen[-1].headers["authorization"] == "Bearer ghu_mine"
