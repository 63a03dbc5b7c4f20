"""Requests through the proxy are recorded by the bridge as proxied, under the proxy's id."""

from __future__ import annotations

import uuid

import httpx
from dp_fakes import MEMBER_TOKEN, ConfigServer, ListSink, StartBridge, snapshot
from proxy_fakes import StartProxy, providers, trust

from aibridge.config.v1 import usage_pb2
from tests.fixtures.upstream import FakeUpstream


async def test_proxied_request_is_recorded_as_proxied_with_the_proxys_id(
    config_service: ConfigServer,
    upstream: FakeUpstream,
    start_recording_bridge: StartBridge,
    start_proxy: StartProxy,
    records: ListSink,
) -> None:
    """The proxy's request id becomes the record's id, returned to the client, and the
    record is marked proxied; a direct request with forged proxy headers gets a new id."""
    await config_service.service.publish(snapshot("1", providers(upstream)))
    bridge = await start_recording_bridge(wait_version="1")
    proxy = await start_proxy(wait_version="1", AIBRIDGE_PROXY_BRIDGE_URL=bridge.url)
    async with httpx.AsyncClient(
        proxy=f"http://user:{MEMBER_TOKEN}@{proxy.listen}", verify=trust(proxy), timeout=10
    ) as http:
        reply = await http.post(
            f"https://localhost:{upstream.port}/v1/chat/completions",
            json={"model": "gpt-test", "messages": []},
        )
    assert reply.status_code == 200, reply.text
    forged = reply.headers["x-aibridge-request-id"]
    async with httpx.AsyncClient(base_url=bridge.url) as http:
        direct = await http.post(
            "/openai/v1/chat/completions",
            json={"model": "gpt-test", "messages": []},
            headers={
                "authorization": f"Bearer {MEMBER_TOKEN}",
                "x-aibridge-via": "proxy",
                "x-aibridge-request-id": forged,  # replayed: would drop a record as a duplicate
            },
        )
    through, replayed = records.records
    assert (through.id, through.proxied) == (forged, True)
    assert uuid.UUID(through.id).version == 7
    assert through.outcome == usage_pb2.OUTCOME_COMPLETED and through.principal_name == "member"
    assert direct.headers["x-aibridge-request-id"] == replayed.id != forged
    assert replayed.proxied  # a forged marker only mislabels the caller's own record
    assert "x-aibridge-via" not in upstream.seen[-1].headers
    assert "x-aibridge-request-id" not in upstream.seen[-1].headers
