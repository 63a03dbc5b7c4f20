"""The relay of a streamed answer: one client write per upstream read, backpressure from a
slow client to the upstream, a client leaving while the relay waits for it."""

from __future__ import annotations

import asyncio
import json
import socket
from urllib.parse import urlsplit

import pytest
from dp_fakes import MEMBER_TOKEN, ListSink, Serve

from aibridge.config.v1 import provider_pb2, usage_pb2
from tests.fixtures.upstream import FakeUpstream, Seen
from tests.fixtures.waits import eventually

Outcome = usage_pb2.Outcome
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)
EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}\n\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n'
BIG = 64 * 1024  # bytes of one event of the large stream
BIG_EVENTS = 512  # 32 MB: more than every socket buffer on the way can hold


@pytest.fixture
async def url(
    serve_recording: Serve, both_providers: tuple[provider_pb2.Provider, provider_pb2.Provider]
) -> str:
    return await serve_recording(*both_providers)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _request(
    url: str, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A streamed chat completion on a raw connection (so the test decides when to read);
    the reader is past the response head."""
    parts = urlsplit(url)
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4 * BIG)
    body = json.dumps({"model": "gpt-test", "stream": True, "messages": []}).encode()
    writer.write(
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: bridge\r\n"
        b"authorization: Bearer %s\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (MEMBER_TOKEN.encode(), len(body), body)
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    return reader, writer


async def _read_chunk(reader: asyncio.StreamReader) -> bytes:
    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
    data = await reader.readexactly(size + 2)
    return data[:-2]


async def test_one_upstream_read_of_many_events_goes_to_the_client_as_one_chunk(
    url: str, upstream: FakeUpstream, records: ListSink
) -> None:
    """Ten events the upstream sends in one write (ten HTTP chunks) reach the client as one
    chunk, and the stream is still read for its usage."""

    async def burst(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD)
        await writer.drain()
        await asyncio.sleep(0.05)  # the head on its own, then the burst in one write
        writer.write(b"".join(_chunk(EVENT) for _ in range(10)))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(_chunk(USAGE) + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()

    upstream.default = burst
    reader, writer = await _request(url)
    try:
        chunks = []
        while chunk := await _read_chunk(reader):
            chunks.append(chunk)
    finally:
        writer.close()
    assert chunks[0] == EVENT * 10
    assert b"".join(chunks[1:]) == USAGE + b"data: [DONE]\n\n"
    record = await records.one()
    assert (record.outcome, record.streamed) == (Outcome.OUTCOME_COMPLETED, True)
    assert (record.usage.input_tokens, record.usage.output_tokens) == (3, 4)


class _Flood:
    """An upstream streaming BIG_EVENTS large events as fast as it is let: `sent` counts
    the bytes its socket took."""

    def __init__(self) -> None:
        self.sent = 0
        self.done = asyncio.Event()

    async def __call__(
        self, seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        event = _chunk(b"data: " + b"x" * (BIG - 8) + b"\n\n")
        writer.write(SSE_HEAD)
        try:
            for _ in range(BIG_EVENTS):
                writer.write(event)
                await writer.drain()
                self.sent += len(event)
            writer.write(_chunk(USAGE) + b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.done.set()


async def _stalled(flood: _Flood) -> int:
    """The upstream's byte count once it stopped moving (0.3 s without progress)."""
    last = -1
    while flood.sent != last:
        last = flood.sent
        await asyncio.sleep(0.3)
    return last


async def test_a_slow_client_stops_the_reading_of_the_upstream_and_gets_every_byte(
    url: str, upstream: FakeUpstream, records: ListSink
) -> None:
    """A client that does not read makes the bridge stop reading the upstream (bounded
    buffering: the upstream stalls well before its end); once the client reads, every byte
    arrives and the stream is recorded complete."""
    flood = _Flood()
    upstream.default = flood
    reader, writer = await _request(url, rcvbuf=64 * 1024)
    try:
        stalled = await _stalled(flood)
        assert stalled < BIG * BIG_EVENTS // 2  # held back: not relayed into memory
        assert not flood.done.is_set()
        received = b""
        while chunk := await _read_chunk(reader):
            received += chunk
    finally:
        writer.close()
    assert len(received) == BIG * BIG_EVENTS + len(USAGE)
    assert received.endswith(USAGE)
    record = await records.one()
    assert record.outcome == Outcome.OUTCOME_COMPLETED
    assert (record.usage.input_tokens, record.usage.output_tokens) == (3, 4)


async def test_a_client_leaving_while_the_relay_waits_for_it_cancels_the_call(
    url: str, upstream: FakeUpstream, records: ListSink
) -> None:
    """A client that stops reading and then hangs up while the bridge holds the upstream
    back is recorded as cancelled, and the upstream connection is dropped."""
    flood = _Flood()
    upstream.default = flood
    _reader, writer = await _request(url, rcvbuf=64 * 1024)
    await _stalled(flood)
    writer.close()
    record = await records.one()
    assert (record.outcome, record.status_code) == (Outcome.OUTCOME_CANCELLED, 200)
    await eventually(flood.done.is_set, within=5)
    assert flood.sent < BIG * BIG_EVENTS
