"""Interception records the bridge builds: one per answered request, through the real
bridge to the fake upstream, handed to a list-backed sink."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest
import recorded_shapes as shapes
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


# --- usage, served model and tool calls, per API shape ----------------------------------

SHAPES = {
    "chat-blocking": ("/openai/v1/chat/completions", False, shapes.chat_completion),
    "chat-stream": ("/openai/v1/chat/completions", True, shapes.chat_stream),
    "responses-blocking": ("/openai/v1/responses", False, shapes.responses_blocking),
    "responses-stream": ("/openai/v1/responses", True, shapes.responses_stream),
    "messages-blocking": ("/anthropic/v1/messages", False, shapes.anthropic_blocking),
    "messages-stream": ("/anthropic/v1/messages", True, shapes.anthropic_stream),
}
EXPECTED = {
    "chat": (shapes.CHAT_MODEL, shapes.CHAT_TOKENS, ("get_weather", "call_abc123")),
    "responses": (shapes.RESPONSES_MODEL, shapes.RESPONSES_TOKENS, ("shell", "call_shell_1")),
    "messages": (
        shapes.ANTHROPIC_MODEL,
        shapes.ANTHROPIC_TOKENS,
        ("get_weather", "toolu_01A09q90qw90lq917835lq9"),
    ),
}


def tokens(record: usage_pb2.Interception) -> tuple[int, ...]:
    u = record.usage
    return (
        u.input_tokens,
        u.output_tokens,
        u.cache_read_tokens,
        u.cache_write_tokens,
        u.reasoning_tokens,
    )


def body_for(path: str, stream: bool, model: str = "the-requested-model") -> dict[str, object]:
    if path.endswith("/responses"):
        return {"model": model, "input": "weather in Paris?", "stream": stream}
    doc: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": "weather in Paris?"}],
        "stream": stream,
        "max_tokens": 100,
    }
    if stream and path.endswith("/chat/completions"):
        doc["stream_options"] = {"include_usage": True}
    return doc


@pytest.mark.parametrize("shape", SHAPES)
async def test_usage_model_and_tool_calls_are_read_from_each_api_shape(
    url: str, upstream: FakeUpstream, records: ListSink, shape: str
) -> None:
    """Each API shape, blocking and streamed, yields its tokens, served model and tool calls."""
    path, stream, reply = SHAPES[shape]
    upstream.responder = lambda seen: reply()
    async with httpx.AsyncClient(base_url=url) as http:
        answer = await http.post(path, json=body_for(path, stream), headers=AUTH)
    assert answer.status_code == 200
    record = await records.one()
    served, expected_tokens, tool = EXPECTED[shape.split("-")[0]]
    assert record.outcome == Outcome.OUTCOME_COMPLETED
    assert record.requested_model == "the-requested-model"
    assert record.served_model == served
    assert tokens(record) == expected_tokens
    assert record.streamed is stream
    assert [(t.name, t.call_id, t.arguments) for t in record.tool_calls] == [(*tool, "")]


@pytest.fixture
async def prompts_url(
    config_service: ConfigServer, upstream: FakeUpstream, start_recording_bridge: StartBridge
) -> str:
    """A recording bridge with prompt recording on."""
    await config_service.service.publish(
        snapshot("1", [openai_provider(upstream), anthropic_provider(upstream)])
    )
    bridge = await start_recording_bridge(wait_version="1", AIBRIDGE_RECORD_PROMPTS="true")
    return bridge.url


@pytest.mark.parametrize("shape", SHAPES)
async def test_prompt_recording_adds_the_last_user_message_and_tool_arguments(
    prompts_url: str, upstream: FakeUpstream, records: ListSink, shape: str
) -> None:
    """With AIBRIDGE_RECORD_PROMPTS the record holds the prompt and each tool call's arguments."""
    path, stream, reply = SHAPES[shape]
    upstream.responder = lambda seen: reply()
    async with httpx.AsyncClient(base_url=prompts_url) as http:
        await http.post(path, json=body_for(path, stream), headers=AUTH)
    record = await records.one()
    assert record.prompt == "weather in Paris?"
    expected = (
        shapes.ANTHROPIC_STREAM_ARGUMENTS if shape == "messages-stream" else shapes.TOOL_ARGUMENTS
    )
    assert [t.arguments for t in record.tool_calls] == [expected]


async def test_prompt_is_the_last_user_message_with_text(
    prompts_url: str, records: ListSink
) -> None:
    """The prompt is the last user message that holds text, not a later tool result."""
    messages = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "answer"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x"}]},
    ]
    async with httpx.AsyncClient(base_url=prompts_url) as http:
        await http.post(
            "/anthropic/v1/messages",
            json={"model": "claude-test", "max_tokens": 5, "messages": messages},
            headers=AUTH,
        )
    assert (await records.one()).prompt == "second"


async def test_default_records_neither_prompt_nor_arguments(
    url: str, upstream: FakeUpstream, records: ListSink
) -> None:
    """Without prompt recording a tool call is recorded by name and id only, with no prompt."""
    upstream.responder = lambda seen: shapes.chat_completion()
    async with httpx.AsyncClient(base_url=url) as http:
        await http.post("/openai/v1/chat/completions", json=CHAT, headers=AUTH)
    record = await records.one()
    assert record.prompt == ""
    assert [(t.name, t.arguments) for t in record.tool_calls] == [("get_weather", "")]
    assert "weather" not in str(record).replace("get_weather", "")
