"""Event-stream decoding: the test encoder is spec-true and SSE output is split-independent."""

from __future__ import annotations

import asyncio
import itertools
import json

import httpx
from bedrock_testkit import (
    ChunkStream,
    FakeBedrock,
    anthropic_events,
    chunk_frame,
    encode_message,
    exception_frame,
    expected_sse,
    static_config,
    stream_ok,
)
from botocore.eventstream import EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.bedrock import BedrockClient
from data_plane.bedrock.eventstream import EventStreamTranslator

EVENTS = anthropic_events(("Hé", "llo ✓", " wörld", "\n"))
WIRE = b"".join(chunk_frame(e) for e in EVENTS)
ERROR_WIRE = b"".join(chunk_frame(e) for e in EVENTS[:3]) + exception_frame(
    "serviceUnavailableException", "Bedrock is busy"
)


def test_encoder_output_is_decoded_by_botocore() -> None:
    """Frames from the test encoder decode with botocore (headers, payload, both CRCs)."""
    buffer = EventStreamBuffer()
    buffer.add_data(encode_message({":message-type": "event", "x": "yz"}, b"payload") * 2)
    messages = list(buffer)
    assert [m.headers for m in messages] == [{":message-type": "event", "x": "yz"}] * 2
    assert [m.payload for m in messages] == [b"payload"] * 2


def test_byte_at_a_time_feed() -> None:
    """Fed one byte at a time, the translator emits exactly the whole-stream SSE."""
    translator = EventStreamTranslator()
    out = [event for i in range(len(WIRE)) for event in translator.feed(WIRE[i : i + 1])]
    assert b"".join(out) == expected_sse(EVENTS)
    assert len(out) == len(EVENTS)
    assert translator.done
    assert translator.usage == {"input_tokens": 25, "output_tokens": 12}


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


async def relay(chunks: list[bytes]) -> tuple[list[bytes], BedrockClient, ChunkStream]:
    fake = FakeBedrock()
    upstream = ChunkStream(chunks)
    fake.respond = lambda got: stream_ok(upstream)
    async with httpx.AsyncClient(transport=fake.transport()) as http:
        client = BedrockClient(static_config(), http)
        stream = await client.stream({"model": "claude-haiku-4-5", "max_tokens": 5}, {})
        out = [chunk async for chunk in stream]
    assert fake.rejected == []
    return out, client, upstream


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(WIRE) - 1), max_size=40))
def test_any_chunking_gives_the_same_sse(cuts: list[int]) -> None:
    """However the network splits the event stream, the client gets the same SSE events."""
    out, _, upstream = asyncio.run(relay(split(WIRE, cuts)))
    assert out == [expected_sse([e]) for e in EVENTS]
    assert upstream.closed


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(ERROR_WIRE) - 1), max_size=20))
def test_any_chunking_of_an_exception(cuts: list[int]) -> None:
    """An exception frame split anywhere still ends the SSE with one overloaded_error event."""
    out, _, _ = asyncio.run(relay(split(ERROR_WIRE, cuts)))
    assert out[:3] == [expected_sse([e]) for e in EVENTS[:3]]
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Bedrock is busy"}}
    assert out[3:] == [
        b"event: error\ndata: " + json.dumps(error, separators=(",", ":")).encode() + b"\n\n"
    ]


def test_non_chunk_events_are_skipped_and_error_messages_end_the_stream() -> None:
    """Unknown event types are dropped; an `error` message becomes an api_error SSE event."""
    translator = EventStreamTranslator()
    other = encode_message({":message-type": "event", ":event-type": "initial-response"}, b"{}")
    error = encode_message(
        {":message-type": "error", ":error-code": "InternalFailure", ":error-message": "oops"}, b""
    )
    out = translator.feed(other + chunk_frame(EVENTS[0]) + error + chunk_frame(EVENTS[1]))
    assert out[0] == expected_sse([EVENTS[0]])
    assert out[1] == (
        b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"oops"}}\n\n'
    )
    assert len(out) == 2
    assert translator.feed(chunk_frame(EVENTS[2])) == []


def test_undecodable_chunk_payload_is_an_error() -> None:
    """A chunk whose payload is not base64 JSON ends the stream with an api_error event."""
    translator = EventStreamTranslator()
    bad = encode_message({":message-type": "event", ":event-type": "chunk"}, b'{"bytes":"@@"}')
    (out,) = translator.feed(bad)
    assert out.startswith(b"event: error\n")
    assert b"undecodable Bedrock stream chunk" in out
