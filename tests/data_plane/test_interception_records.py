"""Interception records the bridge builds: one per answered request, through the real
bridge to the fake upstream, handed to a list-backed sink."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest
from dp_fakes import (
    KEY_A,
    MEMBER_TOKEN,
    ConfigServer,
    ListSink,
    StartBridge,
    anthropic_provider,
    gateway_tokens,
    openai_provider,
    snapshot,
)

from aibridge.config.v1 import provider_pb2, usage_pb2
from aibridge.masking import mask_secret
from tests.fixtures.upstream import FakeUpstream

Outcome = usage_pb2.Outcome
AUTH = {"authorization": f"Bearer {MEMBER_TOKEN}"}
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def url(
    config_service: ConfigServer, upstream: FakeUpstream, start_recording_bridge: StartBridge
) -> str:
    """A recording bridge serving an OpenAI and an Anthropic provider on the fake upstream."""
    await config_service.service.publish(
        snapshot("1", [openai_provider(upstream), anthropic_provider(upstream)])
    )
    bridge = await start_recording_bridge(wait_version="1")
    return bridge.url


async def test_blocking_chat_completion_is_recorded_with_who_what_and_tokens(
    url: str, records: ListSink
) -> None:
    """A blocking chat completion through the OpenAI SDK yields one completed record."""
    async with openai.AsyncOpenAI(
        base_url=f"{url}/openai/v1", api_key=MEMBER_TOKEN, max_retries=0
    ) as client:
        raw = await client.chat.completions.with_raw_response.create(**CHAT)  # type: ignore[call-overload]
    record = await records.one()
    assert raw.headers["x-aibridge-request-id"] == record.id
    assert uuid.UUID(record.id).version == 7
    member = gateway_tokens()[0]
    assert (record.principal_id, record.principal_name, record.token_id) == (
        member.principal_id,
        member.principal_name,
        member.token_id,
    )
    assert (record.provider_name, record.provider_type) == (
        "openai",
        provider_pb2.PROVIDER_TYPE_OPENAI,
    )
    assert record.route == "/v1/chat/completions"
    assert (record.requested_model, record.served_model) == ("gpt-test", "gpt-test")
    assert (record.outcome, record.status_code) == (Outcome.OUTCOME_COMPLETED, 200)
    assert record.client == "openai-python"
    assert record.credential_kind == usage_pb2.CREDENTIAL_KIND_POOLED
    assert record.credential_hint == mask_secret(KEY_A)
    assert record.attempts == 1
    assert (record.usage.input_tokens, record.usage.output_tokens) == (7, 2)
    assert not record.streamed and not record.proxied and not record.prompt
    assert record.started_at.ToNanoseconds() <= record.first_byte_at.ToNanoseconds()
    assert record.first_byte_at.ToNanoseconds() <= record.ended_at.ToNanoseconds()


async def test_unknown_provider_is_answered_with_an_id_but_not_recorded(
    url: str, records: ListSink
) -> None:
    """A request to a provider that does not exist gets a request id and leaves no record."""
    async with httpx.AsyncClient(base_url=url) as http:
        reply = await http.post("/nope/v1/chat/completions", json=CHAT, headers=AUTH)
        metrics = (await http.get("/metrics")).text
    assert reply.status_code == 404
    assert uuid.UUID(reply.headers["x-aibridge-request-id"]).version == 7
    assert records.records == []
    assert 'aibridged_unrecorded_requests_total{reason="unknown_provider"} 1.0' in metrics
