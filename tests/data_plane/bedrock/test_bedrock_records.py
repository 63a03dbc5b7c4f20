"""Bedrock-backed Anthropic providers are recorded like any other: the Bedrock model id
invoked as served model, usage from the translated answer, blocking and streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from bedrock_testkit import (
    ACCESS_KEY,
    ENDPOINT,
    REGION,
    SONNET,
    ChunkStream,
    FakeBedrock,
    anthropic_events,
    chunk_frame,
    json_ok,
    message_json,
    static_config,
    stream_ok,
)
from dp_fakes import (
    MEMBER_TOKEN,
    BridgeSettingsFor,
    ConfigServer,
    ListSink,
    StartBridge,
    daemon_starter,
    provider,
    snapshot,
    wait_for_version,
)

from aibridge.config.v1 import provider_pb2 as pb
from aibridge.config.v1 import usage_pb2
from aibridge.masking import mask_secret
from data_plane.bedrock import BedrockClient
from data_plane.bridge.bedrock_adapter import BedrockUpstream
from data_plane.bridge.server import Bridge
from data_plane.bridge.upstream import AnthropicUpstream

REQUEST = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "hi"}],
}


@pytest.fixture
async def url(
    config_service: ConfigServer,
    fake: FakeBedrock,
    records: ListSink,
    bridge_settings: BridgeSettingsFor,
) -> AsyncIterator[str]:
    """A recording bridge whose Bedrock provider reaches the fake Bedrock Runtime."""
    aws = httpx.AsyncClient(transport=fake.transport())

    def factory(p: pb.Provider, http: httpx.AsyncClient) -> AnthropicUpstream:
        return BedrockUpstream(BedrockClient(static_config(), aws))

    def build(index: int, env: dict[str, str]) -> Bridge:
        return Bridge(bridge_settings(index, env), bedrock_factory=factory, sink=records)

    bedrock = provider(
        "bedrock", pb.PROVIDER_TYPE_BEDROCK, ENDPOINT, bedrock=pb.BedrockSettings(region=REGION)
    )
    await config_service.service.publish(snapshot("1", [bedrock]))
    start: StartBridge
    async with daemon_starter(build, wait_for_version) as start:
        bridge = await start(wait_version="1")
        yield bridge.url
    await aws.aclose()


async def test_blocking_bedrock_call_is_recorded(
    url: str, fake: FakeBedrock, records: ListSink
) -> None:
    """A blocking Bedrock invoke: the model id invoked, its usage, the masked access key id, a completed record."""
    fake.respond = lambda got: json_ok(message_json())
    async with httpx.AsyncClient(base_url=url) as http:
        reply = await http.post(
            "/bedrock/v1/messages", json=REQUEST, headers={"x-api-key": MEMBER_TOKEN}
        )
    assert reply.status_code == 200, reply.text
    record = await records.one()
    assert (record.provider_type, record.requested_model, record.served_model) == (
        pb.PROVIDER_TYPE_BEDROCK,
        "claude-sonnet-4-5",
        SONNET,
    )
    assert (record.usage.input_tokens, record.usage.output_tokens) == (10, 3)
    assert record.outcome == usage_pb2.OUTCOME_COMPLETED
    assert record.credential_kind == usage_pb2.CREDENTIAL_KIND_POOLED
    assert record.credential_hint == mask_secret(ACCESS_KEY)


async def test_streamed_bedrock_call_is_recorded(
    url: str, fake: FakeBedrock, records: ListSink
) -> None:
    """A Bedrock event stream translated to SSE yields its usage and a completed record."""
    events = anthropic_events()
    fake.respond = lambda got: stream_ok(ChunkStream([chunk_frame(e) for e in events]))
    async with httpx.AsyncClient(base_url=url) as http:
        reply = await http.post(
            "/bedrock/v1/messages",
            json=REQUEST | {"stream": True},
            headers={"x-api-key": MEMBER_TOKEN},
        )
    assert reply.status_code == 200
    record = await records.one()
    assert record.streamed and record.served_model == SONNET
    assert (record.usage.input_tokens, record.usage.output_tokens) == (25, 12)
    assert record.outcome == usage_pb2.OUTCOME_COMPLETED
