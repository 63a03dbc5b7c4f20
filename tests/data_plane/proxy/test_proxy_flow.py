"""The proxy in process, in front of a real bridge and a fake upstream, over real sockets."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from dp_fakes import (
    KEY_A,
    MEMBER_TOKEN,
    ConfigServer,
    StartBridge,
    anthropic_provider,
    provider,
    snapshot,
)
from proxy_fakes import (
    Echo,
    StartProxy,
    StartStack,
    providers,
    raw_connect,
    trust,
    wait_for_proxy_version,
)

from aibridge.config.v1 import provider_pb2 as pb
from data_plane.proxy.server import Proxy
from tests.fixtures.upstream import FakeUpstream, Reply, Seen
from tests.fixtures.waits import eventually

BYOK_KEY = "sk-users-own-key-000000000000000000000"


def client(proxy: Proxy, token: str = MEMBER_TOKEN) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        proxy=f"http://user:{token}@{proxy.listen}", verify=trust(proxy), timeout=10
    )


@asynccontextmanager
async def through_stack(
    start_stack: StartStack, **env: str
) -> AsyncIterator[tuple[Proxy, httpx.AsyncClient]]:
    """A started stack's proxy and a member's client through it."""
    proxy = await start_stack(**env)
    async with client(proxy) as http:
        yield proxy, http


async def post_chat(
    http: httpx.AsyncClient,
    upstream: FakeUpstream,
    path: str = "/v1/chat/completions",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """An OpenAI chat request to the upstream's port through the proxy."""
    body = {"model": "gpt-test", "messages": []}
    return await http.post(f"https://localhost:{upstream.port}{path}", json=body, headers=headers)


async def post_messages(
    http: httpx.AsyncClient, upstream: FakeUpstream, headers: dict[str, str]
) -> httpx.Response:
    """An Anthropic messages request to the upstream's port (by IP) through the proxy."""
    body = {"model": "claude-test", "max_tokens": 5, "messages": []}
    return await http.post(
        f"https://127.0.0.1:{upstream.port}/v1/messages", json=body, headers=headers
    )


def assert_pooled(seen: Seen) -> None:
    assert seen.headers["authorization"] == f"Bearer {KEY_A}"
    assert MEMBER_TOKEN not in json.dumps(seen.headers)


async def test_mitm_injects_pooled_key(upstream: FakeUpstream, start_stack: StartStack) -> None:
    """HTTPS to a provider host is terminated, sent to the bridge, and the pooled key used."""
    async with through_stack(start_stack) as (proxy, http):
        for _ in range(3):  # keep-alive: several requests on one MITM'd connection
            auth = {"authorization": f"Bearer {MEMBER_TOKEN}"}
            reply = await post_chat(http, upstream, "/v1/chat/completions?x=1", auth)
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["content"] == "Hello"
    assert upstream.seen[-1].path == "/v1/chat/completions"
    assert_pooled(upstream.seen[-1])
    assert len(upstream.seen) == 3
    assert proxy.shared is not None and proxy.shared.leaves.issued == 1


async def test_byok_keeps_the_users_key(upstream: FakeUpstream, start_stack: StartStack) -> None:
    """A client's own provider key is passed through; the gateway token rides alongside."""
    async with through_stack(start_stack) as (_, http):
        reply = await post_messages(http, upstream, {"x-api-key": BYOK_KEY})
    assert reply.status_code == 200, reply.text
    seen = upstream.seen[-1]
    assert seen.headers["x-api-key"] == BYOK_KEY
    assert MEMBER_TOKEN not in json.dumps(seen.headers)


async def test_pooled_keys_setting_ignores_a_placeholder_key(
    upstream: FakeUpstream, start_stack: StartStack
) -> None:
    """With AIBRIDGE_PROXY_POOLED_KEYS a tool's placeholder key gets the pooled key; a
    client's own key is BYOK only when it also sends X-AIBridge-Token."""
    async with through_stack(start_stack, AIBRIDGE_PROXY_POOLED_KEYS="true") as (_, http):
        tool_key = {"authorization": "Bearer sk-placeholder-the-tool-ships-with"}
        placeholder = await post_chat(http, upstream, headers=tool_key)
        assert placeholder.status_code == 200, placeholder.text
        assert_pooled(upstream.seen[-1])
        byok_headers = {"x-api-key": BYOK_KEY, "x-aibridge-token": MEMBER_TOKEN}
        byok = await post_messages(http, upstream, byok_headers)
    assert byok.status_code == 200, byok.text
    assert upstream.seen[-1].headers["x-api-key"] == BYOK_KEY
    assert "sk-placeholder" not in json.dumps([seen.headers for seen in upstream.seen])


async def test_pooled_keys_setting_leaves_copilot_tokens_alone(
    config_service: ConfigServer,
    upstream: FakeUpstream,
    start_bridge: StartBridge,
    start_proxy: StartProxy,
) -> None:
    """Copilot has no key pool: its user's token still goes upstream with POOLED_KEYS on."""
    copilot = provider("copilot", pb.PROVIDER_TYPE_COPILOT, f"http://localhost:{upstream.port}")
    await config_service.service.publish(snapshot("1", [copilot]))
    bridge = await start_bridge(wait_version="1")
    proxy = await start_proxy(
        wait_version="1", AIBRIDGE_PROXY_BRIDGE_URL=bridge.url, AIBRIDGE_PROXY_POOLED_KEYS="true"
    )
    async with client(proxy) as http:
        user_token = {"authorization": "Bearer ghu_users-copilot-token"}
        reply = await post_chat(http, upstream, "/chat/completions", user_token)
    assert reply.status_code == 200, reply.text
    assert upstream.seen[-1].headers["authorization"] == "Bearer ghu_users-copilot-token"


async def test_sse_streams_chunk_by_chunk(upstream: FakeUpstream, start_stack: StartStack) -> None:
    """SSE events reach the client as the upstream sends them, not at the end."""
    proxy = await start_stack()
    chunks = [b"data: 1\n\n", b"data: 2\n\n"]

    async def gated(seen: Seen) -> Reply:
        return Reply(headers={"content-type": "text/event-stream"}, chunks=chunks, gap=0.3)

    upstream.responder = gated
    async with client(proxy) as http:
        url = f"https://localhost:{upstream.port}/v1/chat/completions"
        body = {"model": "gpt-test", "stream": True, "messages": []}
        async with http.stream("POST", url, json=body) as reply:
            assert reply.headers.get("transfer-encoding") == "chunked"
            loop = asyncio.get_running_loop()
            arrivals = []
            async for chunk in reply.aiter_raw():
                arrivals.append((loop.time(), chunk))
    assert b"".join(c for _, c in arrivals) == b"".join(chunks)
    # The first event arrived well before the last one was sent.
    assert arrivals[-1][0] - arrivals[0][0] > 0.2


async def test_plain_http_provider_request(upstream: FakeUpstream, start_stack: StartStack) -> None:
    """An absolute-form http:// request for a provider host goes to the bridge too."""
    async with through_stack(start_stack) as (_, http):
        reply = await http.get(f"http://localhost:{upstream.port}/v1/models")
    assert reply.status_code == 200, reply.text
    assert reply.json()["data"][0]["id"] == "gpt-test"
    assert_pooled(upstream.seen[-1])


async def test_local_endpoints(
    config_service: ConfigServer,
    upstream: FakeUpstream,
    start_bridge: StartBridge,
    start_proxy: StartProxy,
) -> None:
    """The CA, health, readiness (503 before a snapshot) and metrics are served locally."""
    proxy = await start_proxy()
    base = f"http://{proxy.listen}"
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{base}/readyz")).status_code == 503
        assert (await http.get(f"{base}/healthz")).status_code == 200
        pem = (await http.get(f"{base}/ca-cert.pem")).text
        assert pem.startswith("-----BEGIN CERTIFICATE-----")
        await config_service.service.publish(snapshot("1", providers(upstream)))
        await wait_for_proxy_version(proxy, "1")
        ready = await http.get(f"{base}/readyz")
        assert ready.status_code == 200 and ready.json()["version"] == "1"
        metrics = (await http.get(f"{base}/metrics")).text
        assert 'aibridgeproxyd_snapshot_version_info{version="1"} 1.0' in metrics
        assert "aibridgeproxyd_intercepted_hosts 2.0" in metrics
        assert (await http.get(f"{base}/nope")).status_code == 404
    ssl.create_default_context(cadata=pem)  # a usable CA certificate


async def test_tunnel_and_refusals(
    config_service: ConfigServer, start_proxy: StartProxy, echo: Echo
) -> None:
    """Other hosts are tunnelled byte for byte when allowed; bad ports and private hosts get 403."""
    await config_service.service.publish(snapshot("1", []))
    allowed = await start_proxy(
        wait_version="1",
        AIBRIDGE_PROXY_ALLOWED_PORTS=f"443,{echo.port}",
        AIBRIDGE_PROXY_ALLOWED_PRIVATE_CIDRS="127.0.0.0/8",
    )
    status, _, reader, writer = await raw_connect(
        allowed, f"127.0.0.1:{echo.port}", f"u:{MEMBER_TOKEN}"
    )
    assert status == 200
    writer.write(b"\x00ping\xff")
    assert await reader.readexactly(6) == b"\x00ping\xff"
    writer.close()
    status, _, _, writer = await raw_connect(allowed, "127.0.0.1:22", f"u:{MEMBER_TOKEN}")
    assert status == 403
    writer.close()

    strict = await start_proxy(wait_version="1", AIBRIDGE_PROXY_ALLOWED_PORTS=str(echo.port))
    for target in (f"127.0.0.1:{echo.port}", f"[::1]:{echo.port}", f"localhost:{echo.port}"):
        status, head, _, writer = await raw_connect(strict, target, f"u:{MEMBER_TOKEN}")
        assert status == 403, head
        writer.close()
    assert len(echo.peers) == 1


async def test_removed_provider_stops_being_intercepted(
    config_service: ConfigServer,
    upstream: FakeUpstream,
    start_bridge: StartBridge,
    start_proxy: StartProxy,
    start_stack: StartStack,
) -> None:
    """A snapshot without the provider makes open MITM connections reconnect (421) and
    the next CONNECT to that host is treated as any other host (here: private, 403)."""
    async with through_stack(start_stack) as (proxy, http):
        url = f"https://localhost:{upstream.port}/v1/models"
        assert (await http.get(url)).status_code == 200
        await config_service.service.publish(snapshot("2", [anthropic_provider(upstream)]))
        await wait_for_proxy_version(proxy, "2")
        assert (await http.get(url)).status_code == 421
        with pytest.raises(httpx.ProxyError, match="403"):
            await http.get(url)
    report = await config_service.service.wait_report("2")
    assert report.applied


async def test_dumps_are_written_with_secrets_masked(
    upstream: FakeUpstream, start_stack: StartStack, tmp_path: Path
) -> None:
    """With a dump directory, each provider request leaves a redacted request/response pair."""
    dumps = tmp_path / "dumps"
    async with through_stack(start_stack, AIBRIDGE_DUMP_DIR=str(dumps)) as (_, http):
        reply = await post_chat(http, upstream)
    assert reply.status_code == 200
    # The pair is written once the exchange has finished, just after the client's reply.
    folder = dumps / "openai" / "gpt-test"
    await eventually(lambda: list(folder.glob("*.req.txt")), within=5)  # written last
    (req,) = folder.glob("*.req.txt")
    resp = req.with_name(req.name.replace(".req.", ".resp."))
    text = req.read_text()
    assert "POST /openai/v1/chat/completions" in text
    assert MEMBER_TOKEN not in text and "Authorization: Bear..." in text
    assert resp.read_text().startswith("HTTP/1.1 200")
