"""BYOK is decided once, on the config service, and real bridges follow it (issue #13)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from aibridge.config.v1 import provider_pb2 as pb
from tests.fixtures.upstream import FakeUpstream
from tests.resilience.harness import (
    Admin,
    Procs,
    bridge_ready,
    bridge_url,
)

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("variable", ["AIBRIDGE_ALLOW_BYOK", "CODER_AI_GATEWAY_ALLOW_BYOK"])
async def test_byok_off_on_the_config_service_is_off_on_a_default_bridge(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str, variable: str
) -> None:
    """BYOK switched off on the config service alone (ours or Coder's name) is refused
    by a bridge that sets nothing, and a keyless provider says why."""
    service = await asyncio.to_thread(procs.config_service, sqlite_url, **{variable: "false"})
    target = str(service.ready["target"])
    admin = Admin(target)
    try:
        await admin.create_provider(
            "openai", pb.PROVIDER_TYPE_OPENAI, f"{upstream.url}/v1/", ["sk-pooled-0123456789"]
        )
        await admin.create_provider("keyless", pb.PROVIDER_TYPE_OPENAI, f"{upstream.url}/v1/")
        member = await admin.create_token("alice")
        version = await admin.version()
    finally:
        await admin.close()
    bridge = await asyncio.to_thread(procs.bridge, target)
    await bridge_ready(bridge, version)
    own = {"x-aibridge-token": member, "authorization": "Bearer sk-users-own-key"}
    async with httpx.AsyncClient(base_url=bridge_url(bridge), timeout=10) as http:
        byok = await http.post("/openai/v1/chat/completions", json=CHAT, headers=own)
        keyless = await http.post("/keyless/v1/chat/completions", json=CHAT, headers=own)
        pooled = await http.post(
            "/openai/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {member}"}
        )
    assert byok.status_code == 403
    assert byok.json()["error"]["code"] == "byok_disabled"
    assert keyless.status_code == 503
    assert "BYOK is disabled" in keyless.json()["error"]["message"]
    assert pooled.status_code == 200
    assert [r.headers["authorization"] for r in upstream.seen] == ["Bearer sk-pooled-0123456789"]
