"""BedrockClient over a real local socket: Host with port is signed, chunked bodies stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from bedrock_testkit import (
    FakeBedrock,
    Received,
    anthropic_events,
    chunk_frame,
    expected_sse,
    json_ok,
    message_json,
    static_config,
)

from data_plane.bedrock import BedrockClient


@dataclass
class SocketServer:
    """A one-request-per-connection HTTP/1.1 server on 127.0.0.1:0 answering from FakeBedrock
    (signature-checked); stream answers are written chunked, one `stream_chunks` item each."""

    fake: FakeBedrock
    stream_chunks: list[bytes] = field(default_factory=list)
    stall_after: int | None = None
    client_gone: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)  # the fixture waits for every connection to be closed
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = [tuple(x.split(": ", 1)) for x in lines[1:] if x]
        length = int(dict((k.lower(), v) for k, v in headers)["content-length"])
        body = await reader.readexactly(length)
        request = httpx.Request(
            method, f"http://127.0.0.1:{self.port}{target}", headers=headers, content=body
        )
        response = self.fake.handle(request)
        if response.status_code != 200 or not target.endswith("/invoke-with-response-stream"):
            payload = response.read()
            writer.write(
                f"HTTP/1.1 {response.status_code} X\r\ncontent-type: "
                f"{response.headers['content-type']}\r\ncontent-length: {len(payload)}\r\n"
                "connection: close\r\n\r\n".encode()
                + payload
            )
        else:
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.amazon.eventstream\r\n"
                b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            )
            for i, chunk in enumerate(self.stream_chunks):
                if self.stall_after is not None and i >= self.stall_after:
                    break
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
                await asyncio.sleep(0.002)  # pace: chunks arrive apart, as a model streams
            if self.stall_after is None:
                writer.write(b"0\r\n\r\n")
        try:
            await writer.drain()
            if self.stall_after is not None and await reader.read() == b"":
                self.client_gone.set()  # the client closed its end mid-stream
        except ConnectionResetError:
            self.client_gone.set()  # the client aborted its end mid-stream
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@pytest.fixture
async def server() -> AsyncIterator[SocketServer]:
    srv = SocketServer(FakeBedrock())
    listener = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    srv.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield srv
        # Each connection's transport is closed before the test's loop goes away.
        await asyncio.wait_for(asyncio.gather(*srv.handlers, return_exceptions=True), 5)


async def test_invoke_and_stream_over_a_socket(server: SocketServer) -> None:
    """Signed requests to a base_url with a port verify; a chunked stream relays as SSE."""
    events = anthropic_events()
    wire = b"".join(chunk_frame(e) for e in events)
    server.stream_chunks = [wire[i : i + 37] for i in range(0, len(wire), 37)]

    def respond(got: Received) -> httpx.Response:
        return json_ok(message_json()) if got.action == "invoke" else httpx.Response(200)

    server.fake.respond = respond
    config = static_config(base_url=f"http://127.0.0.1:{server.port}")
    async with httpx.AsyncClient() as http:
        client = BedrockClient(config, http)
        result = await client.invoke({"model": "claude-haiku-4-5", "max_tokens": 4}, {})
        assert result.status == 200
        stream = await client.stream({"model": "claude-haiku-4-5", "max_tokens": 4}, {})
        chunks = [c async for c in stream]
    assert server.fake.rejected == []
    assert chunks == [expected_sse([e]) for e in events]


async def test_disconnect_closes_the_upstream_connection(server: SocketServer) -> None:
    """When the consumer stops mid-stream, the upstream TCP connection is closed."""
    server.stream_chunks = [chunk_frame(e) for e in anthropic_events()]
    server.stall_after = 2
    server.fake.respond = lambda got: httpx.Response(200)
    config = static_config(base_url=f"http://127.0.0.1:{server.port}")
    async with httpx.AsyncClient() as http:
        stream = await BedrockClient(config, http).stream({"max_tokens": 4}, {})
        async with stream:
            async for chunk in stream:
                assert chunk.startswith(b"event: message_start")
                break
        await asyncio.wait_for(server.client_gone.wait(), 5)
        with pytest.raises(RuntimeError, match="only once"):
            stream.__aiter__()
