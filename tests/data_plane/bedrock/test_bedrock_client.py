"""BedrockClient against a fake Bedrock Runtime that verifies SigV4 (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import httpx2
import pytest
from bedrock_testkit import (
    HAIKU,
    SECRET_KEY,
    SONNET,
    ChunkStream,
    FakeBedrock,
    Received,
    anthropic_events,
    aws_error,
    chunk_frame,
    exception_frame,
    expected_sse,
    json_ok,
    message_json,
    static_config,
    stream_ok,
)

from aibridge.masking import Secret
from data_plane.bedrock import BedrockClient, BedrockStream
from tests.fixtures.waits import eventually

REQUEST: dict[str, Any] = {
    "model": "claude-sonnet-4-5-20250929",
    "max_tokens": 128,
    "messages": [{"role": "user", "content": "Say hello"}],
}


@pytest.fixture
async def http(fake: FakeBedrock) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=fake.transport()) as client:
        yield client


@pytest.fixture
def bedrock(http: httpx.AsyncClient) -> BedrockClient:
    return BedrockClient(static_config(), http)


async def collect(stream: BedrockStream) -> list[bytes]:
    return [chunk async for chunk in stream]


async def test_invoke_round_trip(fake: FakeBedrock, bedrock: BedrockClient) -> None:
    """A non-streaming request is signed, translated, sent to /invoke and relayed as is."""
    fake.respond = lambda got: json_ok(message_json())
    result = await bedrock.invoke(
        {**REQUEST, "stream": False}, {"anthropic-beta": "context-1m-2025-08-07"}
    )
    assert fake.rejected == []
    (got,) = fake.received
    assert (got.model_id, got.action) == (SONNET, "invoke")
    assert got.body == {
        "anthropic_version": "bedrock-2023-05-31",
        "anthropic_beta": ["context-1m-2025-08-07"],
        "max_tokens": 128,
        "messages": [{"role": "user", "content": "Say hello"}],
    }
    assert got.headers["content-type"] == "application/json"
    assert result.ok
    assert result.status == 200
    assert json.loads(result.body) == message_json()
    assert result.headers == {"content-type": "application/json", "x-amzn-requestid": "req-ok-1"}
    assert result.model_id == SONNET
    assert result.invocation_metrics == {
        "inputTokenCount": 10,
        "outputTokenCount": 3,
        "invocationLatency": 420,
    }


async def test_haiku_goes_to_small_fast_model(fake: FakeBedrock, bedrock: BedrockClient) -> None:
    """Claude Code's haiku background requests are sent to small_fast_model, URL-quoted."""
    fake.respond = lambda got: json_ok(message_json())
    await bedrock.invoke({**REQUEST, "model": "claude-3-5-haiku-20241022"}, {})
    assert fake.received[0].model_id == HAIKU
    assert fake.rejected == []


async def test_wrong_secret_is_rejected_by_the_fake(
    fake: FakeBedrock, http: httpx.AsyncClient
) -> None:
    """The fake really checks signatures: a wrong secret gets InvalidSignature → 401."""
    client = BedrockClient(static_config(access_key_secret=Secret("not-the-secret")), http)
    fake.respond = lambda got: json_ok(message_json())
    result = await client.invoke(REQUEST, {})
    assert fake.received == []
    assert len(fake.rejected) == 1
    assert result.status == 401
    assert json.loads(result.body)["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    ("status", "aws_type", "anthropic_type", "anthropic_status"),
    [
        (429, "ThrottlingException", "rate_limit_error", 429),
        (400, "ValidationException", "invalid_request_error", 400),
        (403, "AccessDeniedException", "permission_error", 403),
        (403, "UnrecognizedClientException", "authentication_error", 401),
        (429, "ModelNotReadyException", "overloaded_error", 529),
        (503, "ServiceUnavailableException", "overloaded_error", 503),
        (500, "InternalServerException", "api_error", 500),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
async def test_upstream_errors_become_anthropic_errors(
    fake: FakeBedrock,
    bedrock: BedrockClient,
    status: int,
    aws_type: str,
    anthropic_type: str,
    anthropic_status: int,
    streaming: bool,
) -> None:
    """Bedrock error responses map to Anthropic error bodies with the matching status."""
    fake.respond = lambda got: aws_error(status, aws_type, f"{aws_type} happened")
    if streaming:
        stream = await bedrock.stream({**REQUEST, "stream": True}, {})
        body = b"".join(await collect(stream))
        code, headers, error = stream.status, stream.headers, stream.error
    else:
        result = await bedrock.invoke(REQUEST, {})
        body, code, headers = result.body, result.status, result.headers
        error = json.loads(body)
    expected = {
        "type": "error",
        "error": {"type": anthropic_type, "message": f"{aws_type} happened"},
    }
    assert (code, json.loads(body), error) == (anthropic_status, expected, expected)
    assert headers["content-type"] == "application/json"


async def test_stream_translated_to_anthropic_sse(
    fake: FakeBedrock, bedrock: BedrockClient
) -> None:
    """The event stream becomes Anthropic SSE, one event per chunk, metrics kept aside."""
    events = anthropic_events()
    upstream = ChunkStream([b"".join(chunk_frame(e) for e in events)])
    fake.respond = lambda got: stream_ok(upstream)
    stream = await bedrock.stream({**REQUEST, "stream": True}, {})
    assert fake.received[0].action == "invoke-with-response-stream"
    assert fake.received[0].headers["accept"] == "application/vnd.amazon.eventstream"
    assert "stream" not in fake.received[0].body
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    chunks = await collect(stream)
    assert len(chunks) == len(events)
    assert b"".join(chunks) == expected_sse(events)
    assert all(c.startswith(b"event: ") and c.endswith(b"\n\n") for c in chunks)
    assert b"invocationMetrics" not in b"".join(chunks)
    assert stream.usage == {"input_tokens": 25, "output_tokens": 12}
    assert stream.stop_reason == "end_turn"
    assert stream.invocation_metrics is not None
    assert stream.invocation_metrics["outputTokenCount"] == 12
    assert stream.error is None
    assert upstream.closed


async def test_exception_event_becomes_sse_error(fake: FakeBedrock, bedrock: BedrockClient) -> None:
    """A mid-stream exception event is sent as an Anthropic `event: error` and ends the stream."""
    events = anthropic_events()[:3]
    frames = [chunk_frame(e) for e in events]
    frames.append(exception_frame("throttlingException", "Too many tokens, slow down"))
    frames.append(chunk_frame({"type": "content_block_stop", "index": 0}))  # never relayed
    upstream = ChunkStream(frames)
    fake.respond = lambda got: stream_ok(upstream)
    stream = await bedrock.stream(REQUEST, {})
    chunks = await collect(stream)
    assert b"".join(chunks[:-1]) == expected_sse(events)
    error = {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Too many tokens, slow down"},
    }
    assert (
        chunks[-1]
        == b"event: error\ndata: " + json.dumps(error, separators=(",", ":")).encode() + b"\n\n"
    )
    assert stream.error == error
    assert upstream.closed


async def test_truncated_stream_ends_with_error(fake: FakeBedrock, bedrock: BedrockClient) -> None:
    """A stream that ends before message_stop (or mid-frame) ends with an api_error event."""
    frames = [chunk_frame(e) for e in anthropic_events()[:2]]
    frames.append(chunk_frame(anthropic_events()[2])[:-7])
    fake.respond = lambda got: stream_ok(ChunkStream(frames))
    stream = await bedrock.stream(REQUEST, {})
    chunks = await collect(stream)
    assert len(chunks) == 3
    assert chunks[-1].startswith(b"event: error\n")
    assert stream.error is not None
    assert stream.error["error"]["type"] == "api_error"


async def test_corrupt_frame_ends_with_error(fake: FakeBedrock, bedrock: BedrockClient) -> None:
    """A frame whose CRC does not match ends the stream with an api_error event."""
    frame = bytearray(chunk_frame(anthropic_events()[0]))
    frame[20] ^= 0xFF
    fake.respond = lambda got: stream_ok(ChunkStream([bytes(frame)]))
    stream = await bedrock.stream(REQUEST, {})
    chunks = await collect(stream)
    assert len(chunks) == 1
    assert b"malformed Bedrock event stream" in chunks[0]


async def test_consumer_stop_closes_upstream(fake: FakeBedrock, bedrock: BedrockClient) -> None:
    """A client that goes away (stops iterating, or its task is cancelled) closes the upstream."""
    frames = [chunk_frame(e) for e in anthropic_events()]
    upstream = ChunkStream(frames, hang_after=2)
    fake.respond = lambda got: stream_ok(upstream)
    stream = await bedrock.stream(REQUEST, {})
    async with stream:
        async for chunk in stream:
            assert chunk.startswith(b"event: message_start")
            break
    assert upstream.closed

    upstream2 = ChunkStream(frames, hang_after=2)
    fake.respond = lambda got: stream_ok(upstream2)
    stream2 = await bedrock.stream(REQUEST, {})
    got: list[bytes] = []
    two_events = asyncio.Event()

    async def consume() -> None:
        async for chunk in stream2:
            got.append(chunk)
            if len(got) == 2:
                two_events.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(two_events.wait(), 5)
    await eventually(lambda: upstream2.hanging)  # the consumer waits for the third chunk
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert upstream2.closed
    assert upstream2.sent == 2


def bridge_transport(bedrock: BedrockClient) -> httpx2.MockTransport:
    """A minimal stand-in for the bridge route, so the official SDK can talk to BedrockClient.

    (This anthropic SDK release speaks `httpx2`, hence its MockTransport here.)
    """

    async def handle(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        headers = list(request.headers.multi_items())
        if body.get("stream"):
            stream = await bedrock.stream(body, headers)
            return httpx2.Response(stream.status, headers=stream.headers, content=stream)
        result = await bedrock.invoke(body, headers)
        return httpx2.Response(result.status, headers=result.headers, content=result.body)

    return httpx2.MockTransport(handle)


async def test_official_sdk_parses_stream_and_message(
    fake: FakeBedrock, bedrock: BedrockClient
) -> None:
    """The anthropic SDK reads the SSE (final message, usage) and the JSON; errors raise typed."""
    events = anthropic_events(("Hel", "lo", " world"))

    def respond(got: Received) -> httpx.Response:
        if got.action == "invoke":
            return json_ok(message_json("plain"))
        return stream_ok(ChunkStream([b"".join(chunk_frame(e) for e in events)]))

    fake.respond = respond
    async with httpx2.AsyncClient(transport=bridge_transport(bedrock)) as sdk_http:
        sdk = anthropic.AsyncAnthropic(
            api_key="gateway-token",
            base_url="http://bridge.test/bedrock",
            http_client=sdk_http,
            max_retries=0,
        )
        async with sdk.messages.stream(
            model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as s:
            texts = [t async for t in s.text_stream]
            final = await s.get_final_message()
        assert "".join(texts) == "Hello world"
        assert final.content[0].type == "text"
        assert final.content[0].text == "Hello world"
        assert (final.usage.input_tokens, final.usage.output_tokens) == (25, 12)
        assert final.stop_reason == "end_turn"
        assert fake.received[-1].model_id == HAIKU

        message = await sdk.messages.create(
            model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.content[0].type == "text"
        assert message.content[0].text == "plain"

        fake.respond = lambda got: aws_error(429, "ThrottlingException", "slow down")
        with pytest.raises(anthropic.RateLimitError):
            await sdk.messages.create(
                model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            )

        fake.respond = lambda got: stream_ok(
            ChunkStream(
                [chunk_frame(events[0]), exception_frame("modelStreamErrorException", "boom")]
            )
        )
        with pytest.raises(anthropic.APIStatusError, match="boom"):
            async with sdk.messages.stream(
                model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            ) as s:
                await s.get_final_message()
    assert fake.rejected == []
    assert SECRET_KEY not in repr(bedrock)


async def test_aclose_before_iterating_releases_upstream(
    fake: FakeBedrock, bedrock: BedrockClient
) -> None:
    """A stream closed without being read (e.g. the bridge gives up first) closes upstream."""
    upstream = ChunkStream([chunk_frame(e) for e in anthropic_events()])
    fake.respond = lambda got: stream_ok(upstream)
    stream = await bedrock.stream(REQUEST, {})
    await stream.aclose()
    await stream.aclose()  # idempotent
    assert upstream.closed
    assert upstream.sent == 0
    with pytest.raises(RuntimeError, match="only once"):
        stream.__aiter__()
