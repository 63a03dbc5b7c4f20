"""Interception records the bridge builds: one per answered request, through the real
bridge to the fake upstream, handed to a list-backed sink."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket
import uuid
from typing import Any

import httpx
import openai
import pytest
import recorded_shapes as shapes
from dp_fakes import (
    KEY_A,
    KEY_B,
    MEMBER_TOKEN,
    OWNER_TOKEN,
    ListSink,
    Serve,
    gateway_tokens,
    openai_provider,
    provider,
)

from aibridge.config.v1 import provider_pb2, usage_pb2
from aibridge.masking import mask_secret
from tests.fixtures.upstream import (
    FakeUpstream,
    Reply,
    Seen,
    anthropic_events,
    json_reply,
    reset,
    sse,
)
from tests.fixtures.waits import eventually

Outcome = usage_pb2.Outcome
AUTH = {"authorization": f"Bearer {MEMBER_TOKEN}"}
BYOK_KEY = "sk-users-own-key-000000000000000000000"
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def url(
    serve_recording: Serve, both_providers: tuple[provider_pb2.Provider, provider_pb2.Provider]
) -> str:
    """A recording bridge serving an OpenAI and an Anthropic provider on the fake upstream."""
    return await serve_recording(*both_providers)


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


async def send_shape(url: str, upstream: FakeUpstream, shape: str) -> httpx.Response:
    """The request of API shape `shape` to the bridge at `url`, the upstream answering in kind."""
    path, stream, reply = SHAPES[shape]
    upstream.responder = lambda seen: reply()
    async with httpx.AsyncClient(base_url=url) as http:
        return await http.post(path, json=body_for(path, stream), headers=AUTH)


@pytest.mark.parametrize("shape", SHAPES)
async def test_usage_model_and_tool_calls_are_read_from_each_api_shape(
    url: str, upstream: FakeUpstream, records: ListSink, shape: str
) -> None:
    """Each API shape, blocking and streamed, yields its tokens, served model and tool calls."""
    answer = await send_shape(url, upstream, shape)
    assert answer.status_code == 200
    record = await records.one()
    served, expected_tokens, tool = EXPECTED[shape.split("-")[0]]
    assert record.outcome == Outcome.OUTCOME_COMPLETED
    assert record.requested_model == "the-requested-model"
    assert record.served_model == served
    assert tokens(record) == expected_tokens
    assert record.streamed is SHAPES[shape][1]
    assert [(t.name, t.call_id, t.arguments) for t in record.tool_calls] == [(*tool, "")]


@pytest.fixture
async def prompts_url(
    serve_recording: Serve, both_providers: tuple[provider_pb2.Provider, provider_pb2.Provider]
) -> str:
    """A recording bridge with prompt recording on."""
    return await serve_recording(*both_providers, AIBRIDGE_RECORD_PROMPTS="true")


@pytest.mark.parametrize("shape", SHAPES)
async def test_prompt_recording_adds_the_last_user_message_and_tool_arguments(
    prompts_url: str, upstream: FakeUpstream, records: ListSink, shape: str
) -> None:
    """With AIBRIDGE_RECORD_PROMPTS the record holds the prompt and each tool call's arguments."""
    await send_shape(prompts_url, upstream, shape)
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


# --- outcome per kind of failure; the request id on every answer -------------------------

KEY_B_REPLY = {"error": {"message": "rate limited", "type": "rate_limit_error"}}


async def post(base: str, path: str = "/openai/v1/chat/completions", **kw: Any) -> httpx.Response:
    kw.setdefault("json", CHAT)
    kw.setdefault("headers", AUTH)
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        return await http.post(path, **kw)


async def recorded(records: ListSink, answer: httpx.Response) -> usage_pb2.Interception:
    """The one record, after checking the answer carried its id."""
    record = await records.one()
    assert answer.headers["x-aibridge-request-id"] == record.id
    return record


async def test_the_sink_is_handed_the_records_values_not_the_request(
    url: str, records: ListSink
) -> None:
    """What the sink holds of a finished request reaches nothing but texts and numbers:
    its response reader, headers and credentials go with the request, not with the record
    waiting for its batch."""
    await recorded(records, await post(url))
    seen: set[int] = set()
    reached: set[type] = set()
    todo: list[object] = list(gc.get_referents(records.submitted[0]))
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        reached.add(type(obj))
        todo.extend(gc.get_referents(obj))
    assert reached <= {tuple, list, str, int, bool}, reached


async def test_upstream_error_status_is_an_upstream_error(
    url: str, upstream: FakeUpstream, records: ListSink
) -> None:
    """An upstream 500 relayed to the client is recorded as an upstream error with 500."""
    upstream.responder = lambda seen: json_reply({"error": {"message": "boom"}}, 500)
    record = await recorded(records, await post(url))
    assert (record.outcome, record.status_code, record.attempts) == (
        Outcome.OUTCOME_UPSTREAM_ERROR,
        500,
        1,
    )


async def test_open_breaker_refusal_is_recorded_as_refused_by_the_breaker(
    serve_recording: Serve, upstream: FakeUpstream, records: ListSink
) -> None:
    """Once the breaker is open, a refused request is recorded as refused by the breaker."""
    bridge_url = await serve_recording(
        openai_provider(upstream),
        AIBRIDGE_CIRCUIT_BREAKER_ENABLED="true",
        AIBRIDGE_CIRCUIT_BREAKER_FAILURE_THRESHOLD="1",
    )
    upstream.responder = lambda seen: json_reply({"error": {"message": "overloaded"}}, 503)
    await post(bridge_url)
    answer = await post(bridge_url)
    assert answer.status_code == 503
    await eventually(lambda: len(records.records) == 2)
    first, second = records.records
    assert first.outcome == Outcome.OUTCOME_UPSTREAM_ERROR
    assert answer.headers["x-aibridge-request-id"] == second.id
    assert (second.outcome, second.status_code, second.attempts) == (
        Outcome.OUTCOME_REFUSED_BREAKER,
        503,
        0,
    )
    assert second.principal_name == "member"


async def test_exhausted_pool_is_recorded_as_refused_by_the_pool(
    upstream: FakeUpstream,
    serve_recording: Serve,
    records: ListSink,
) -> None:
    """Every key rate limited: the 429 the pool answers is recorded with both attempts."""
    bridge_url = await serve_recording(openai_provider(upstream, keys=[KEY_A, KEY_B]))
    upstream.responder = lambda seen: Reply(
        429, json.dumps(KEY_B_REPLY).encode(), {"retry-after": "30"}
    )
    answer = await post(bridge_url)
    assert answer.status_code == 429
    record = await recorded(records, answer)
    assert (record.outcome, record.status_code, record.attempts) == (
        Outcome.OUTCOME_REFUSED_POOL,
        429,
        2,
    )


async def test_failover_records_the_attempts_and_the_key_that_served(
    upstream: FakeUpstream,
    serve_recording: Serve,
    records: ListSink,
) -> None:
    """A first key refused (401) and a second that serves: two attempts, the second's hint."""
    bridge_url = await serve_recording(openai_provider(upstream, keys=[KEY_A, KEY_B]))

    def by_key(seen: Seen) -> Reply:
        if seen.headers["authorization"] == f"Bearer {KEY_A}":
            return json_reply({"error": {"message": "invalid key"}}, 401)
        return upstream.default_reply(seen)

    upstream.responder = by_key
    record = await recorded(records, await post(bridge_url))
    assert (record.outcome, record.attempts) == (Outcome.OUTCOME_COMPLETED, 2)
    assert record.credential_hint == mask_secret(KEY_B)


async def test_unreachable_upstream_is_a_gateway_error(
    serve_recording: Serve, records: ListSink
) -> None:
    """An upstream nobody listens on: the bridge's 502 is recorded as a gateway error."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    gone = provider(
        "openai", provider_pb2.PROVIDER_TYPE_OPENAI, f"http://127.0.0.1:{port}/v1/", [KEY_A]
    )
    bridge_url = await serve_recording(gone)
    record = await recorded(records, await post(bridge_url))
    assert (record.outcome, record.status_code, record.attempts) == (
        Outcome.OUTCOME_GATEWAY_ERROR,
        502,
        1,
    )


async def test_refusals_before_the_upstream_are_gateway_errors_of_the_caller(
    upstream: FakeUpstream,
    serve_recording: Serve,
    records: ListSink,
) -> None:
    """A disabled provider (503) and an unserved route (404) are recorded for their caller."""
    disabled = openai_provider(upstream, name="off", status=provider_pb2.PROVIDER_STATUS_DISABLED)
    bridge_url = await serve_recording(openai_provider(upstream), disabled)
    first = await post(bridge_url, "/off/v1/chat/completions")
    second = await post(bridge_url, "/openai/v1/nope")
    await eventually(lambda: len(records.records) == 2)
    assert [
        (r.provider_name, r.route, r.outcome, r.status_code, r.principal_name)
        for r in records.records
    ] == [
        ("off", "/v1/chat/completions", Outcome.OUTCOME_GATEWAY_ERROR, 503, "member"),
        ("openai", "/v1/nope", Outcome.OUTCOME_GATEWAY_ERROR, 404, "member"),
    ]
    assert [first.headers["x-aibridge-request-id"], second.headers["x-aibridge-request-id"]] == [
        r.id for r in records.records
    ]


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer not-a-token"}, {"authorization": f"Bearer {OWNER_TOKEN}"}],
    ids=["no-token", "bad-token", "owner-token"],
)
async def test_unauthenticated_requests_are_counted_not_recorded(
    url: str, records: ListSink, headers: dict[str, str]
) -> None:
    """A request without a valid member token is answered with an id, counted, never recorded."""
    answer = await post(url, headers=headers)
    assert answer.status_code in (401, 403)
    assert uuid.UUID(answer.headers["x-aibridge-request-id"]).version == 7
    async with httpx.AsyncClient(base_url=url) as http:
        metrics = (await http.get("/metrics")).text
    assert 'aibridged_unrecorded_requests_total{reason="unauthenticated"} 1.0' in metrics
    assert records.records == []


async def test_byok_is_recorded_with_the_masked_hint_of_the_callers_key(
    url: str, upstream: FakeUpstream, records: ListSink
) -> None:
    """A client's own key is recorded as BYOK with its masked hint, never the key."""
    headers = {"authorization": f"Bearer {BYOK_KEY}", "x-aibridge-token": MEMBER_TOKEN}
    record = await recorded(records, await post(url, headers=headers))
    assert upstream.seen[-1].headers["authorization"] == f"Bearer {BYOK_KEY}"
    assert record.credential_kind == usage_pb2.CREDENTIAL_KIND_BYOK
    assert record.credential_hint == mask_secret(BYOK_KEY)
    assert BYOK_KEY not in str(record)


async def test_streamed_answer_carries_the_request_id(url: str, records: ListSink) -> None:
    """An SSE answer carries the record's id in its headers too."""
    async with (
        openai.AsyncOpenAI(
            base_url=f"{url}/openai/v1", api_key=MEMBER_TOKEN, max_retries=0
        ) as client,
        client.chat.completions.with_streaming_response.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
        ) as response,
    ):
        request_id = response.headers["x-aibridge-request-id"]
        async for _ in response.iter_lines():
            pass
    record = await records.one()
    assert record.id == request_id
    assert record.streamed and record.outcome == Outcome.OUTCOME_COMPLETED
    assert record.first_byte_at.ToNanoseconds() > 0


# --- clients that leave ---------------------------------------------------------------


async def _hold_open(
    seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Send the Responses stream, then keep the response open (no end of body) until the
    bridge hangs up: the upstream's last event is in, its body is not over."""
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    for chunk in sse(shapes.responses_events()):
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    await writer.drain()
    await reader.read()  # until the bridge closes the connection


async def test_client_hanging_up_after_the_final_event_still_completes(
    url: str, upstream: FakeUpstream, records: ListSink
) -> None:
    """A client that leaves right after response.completed (as Codex does) yields a
    completed record with its usage."""
    upstream.default = _hold_open
    body = body_for("/openai/v1/responses", True)
    async with (
        httpx.AsyncClient(base_url=url, timeout=10) as http,
        http.stream("POST", "/openai/v1/responses", json=body, headers=AUTH) as reply,
    ):
        async for line in reply.aiter_lines():
            if line.startswith("event: response.completed"):
                break
    record = await records.one()
    assert (record.outcome, record.status_code) == (Outcome.OUTCOME_COMPLETED, 200)
    assert tokens(record) == shapes.RESPONSES_TOKENS
    assert [t.name for t in record.tool_calls] == ["shell"]


async def test_client_leaving_mid_stream_is_cancelled(
    url: str, upstream: FakeUpstream, records: ListSink
) -> None:
    """A client that leaves before the answer's end is recorded as cancelled."""
    upstream.responder = lambda seen: Reply(
        headers={"content-type": "text/event-stream"},
        chunks=sse([(e["type"], e) for e in anthropic_events(["a"] * 50, "claude-test")]),
        gap=0.02,
    )
    body = body_for("/anthropic/v1/messages", True)
    async with (
        httpx.AsyncClient(base_url=url, timeout=10) as http,
        http.stream("POST", "/anthropic/v1/messages", json=body, headers=AUTH) as reply,
    ):
        async for line in reply.aiter_lines():
            if "content_block_delta" in line:
                break
    record = await records.one()
    assert (record.outcome, record.status_code) == (Outcome.OUTCOME_CANCELLED, 200)
    assert record.usage.input_tokens == 11  # message_start was read before the client left


async def _break_mid_stream(
    seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Start an Anthropic stream, then reset the connection before its end."""
    events = sse([(e["type"], e) for e in anthropic_events(["a", "b"], "claude-test")])
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    for chunk in events[:2]:
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    await writer.drain()
    reset(writer)


async def test_stream_broken_by_the_upstream_is_an_upstream_error(
    url: str, upstream: FakeUpstream, records: ListSink
) -> None:
    """An upstream that breaks its stream after it started: an upstream error, status 200."""
    upstream.default = _break_mid_stream
    body = body_for("/anthropic/v1/messages", True)
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        with contextlib.suppress(httpx.HTTPError):
            await http.post("/anthropic/v1/messages", json=body, headers=AUTH)
    record = await records.one()
    assert (record.outcome, record.status_code) == (Outcome.OUTCOME_UPSTREAM_ERROR, 200)
    assert record.usage.input_tokens == 11


@pytest.mark.parametrize(
    "reply",
    [
        Reply(body=b'{"usage": {"prompt_tokens": 1'),
        Reply(body=b"[" * 200_000),
        Reply(
            headers={"content-type": "text/event-stream"},
            chunks=[b"data: " + b"x" * 3_000_000 + b"\n\n", b'data: {"usage": [}\n\n'],
        ),
    ],
    ids=["truncated-json", "deep-json", "huge-sse-line"],
)
async def test_malformed_or_huge_answer_is_relayed_whole_and_recorded_without_usage(
    url: str, upstream: FakeUpstream, records: ListSink, reply: Reply
) -> None:
    """An answer the reader cannot make sense of reaches the client byte for byte; its
    record simply has no usage."""
    upstream.responder = lambda seen: reply
    answer = await post(url)
    expected = reply.body if reply.chunks is None else b"".join(reply.chunks)
    assert (answer.status_code, answer.content) == (200, expected)
    record = await recorded(records, answer)
    assert record.outcome == Outcome.OUTCOME_COMPLETED
    assert tokens(record) == (0, 0, 0, 0, 0)
