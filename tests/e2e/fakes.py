"""A fake LLM upstream on a real socket (OpenAI, Anthropic and Bedrock shapes, JSON and SSE),
run by uvicorn in a thread so that tests can use the official SDKs' blocking clients.

Bedrock requests are checked by the SigV4-verifying FakeBedrock of the Bedrock tests and
answered with a real event stream.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from tests.data_plane.bedrock.bedrock_testkit import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    ChunkStream,
    FakeBedrock,
    Received,
    anthropic_events,
    chunk_frame,
    json_ok,
    message_json,
    stream_ok,
)

__all__ = ["ACCESS_KEY", "REGION", "SECRET_KEY", "Seen", "ThreadServer", "Upstream"]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def _sse(events: list[tuple[str | None, dict[str, Any] | str]]) -> list[bytes]:
    out = []
    for name, data in events:
        payload = data if isinstance(data, str) else json.dumps(data)
        out.append((f"event: {name}\n" if name else "").encode() + f"data: {payload}\n\n".encode())
    return out


def openai_stream(model: str) -> list[bytes]:
    chunks: list[tuple[str | None, dict[str, Any] | str]] = []
    for i, word in enumerate(["Hello", " from", " upstream"]):
        chunks.append(
            (
                None,
                {
                    "id": "c1",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": model,
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
                },
            )
        )
        del i
    chunks.append(
        (
            None,
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            },
        )
    )
    chunks.append((None, "[DONE]"))
    return _sse(chunks)


def responses_stream(model: str) -> list[bytes]:
    """An OpenAI Responses API stream: created, one text delta per word, completed."""
    words = ["Hello", " from", " upstream"]
    response: dict[str, Any] = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": model,
        "status": "in_progress",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    events: list[dict[str, Any]] = [{"type": "response.created", "response": response}]
    events += [
        {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": word,
            "logprobs": [],
        }
        for word in words
    ]
    text = {"type": "output_text", "text": "".join(words), "annotations": []}
    message = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed"}
    completed = response | {
        "status": "completed",
        "output": [message | {"content": [text]}],
        "usage": {
            "input_tokens": 5,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 3,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 8,
        },
    }
    events.append({"type": "response.completed", "response": completed})
    return _sse([(e["type"], e | {"sequence_number": i}) for i, e in enumerate(events)])


def anthropic_stream(model: str) -> list[bytes]:
    return _sse([(e["type"], e) for e in anthropic_events(("Hello", " from", " upstream"))])


@dataclass
class Upstream:
    """The ASGI app; `seen` records every request (headers lower-cased)."""

    seen: list[Seen] = field(default_factory=list)
    bedrock: FakeBedrock = field(default_factory=FakeBedrock)

    def __post_init__(self) -> None:
        self.bedrock.respond = self._bedrock_reply

    @staticmethod
    def _bedrock_reply(got: Received) -> httpx.Response:
        if got.action == "invoke":
            return json_ok(message_json("Hello from bedrock"))
        frames = [chunk_frame(e) for e in anthropic_events(("Hello", " from", " bedrock"))]
        return stream_ok(ChunkStream(frames))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        path = scope["path"]
        self.seen.append(Seen(scope["method"], path, headers, body))
        if path.startswith("/model/"):
            await self._bedrock(scope, headers, body, send)
            return
        data = json.loads(body) if body else {}
        model = data.get("model", "m")
        if path.endswith("/chat/completions"):
            if data.get("stream"):
                await self._stream(send, openai_stream(model))
                return
            await self._json(
                send,
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "Hello from upstream"},
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                },
            )
        elif path.endswith("/responses") and data.get("stream"):
            await self._stream(send, responses_stream(model))
        elif path.endswith("/messages"):
            if data.get("stream"):
                await self._stream(send, anthropic_stream(model))
                return
            await self._json(send, message_json("Hello from upstream", model))
        elif path.endswith("/models"):
            await self._json(
                send,
                {
                    "object": "list",
                    "data": [{"id": "m1", "object": "model", "created": 1, "owned_by": "x"}],
                },
            )
        else:
            await self._json(send, {"error": {"message": "no such route"}}, 404)

    async def _bedrock(
        self, scope: dict[str, Any], headers: dict[str, str], body: bytes, send: Any
    ) -> None:
        host = headers.get("host", "")
        query = scope.get("query_string", b"").decode()
        request = httpx.Request(
            scope["method"],
            f"http://{host}{scope['raw_path'].decode()}" + (f"?{query}" if query else ""),
            headers=list(headers.items()),
            content=body,
        )
        response = self.bedrock.handle(request)
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [
                    (k.encode(), v.encode())
                    for k, v in response.headers.items()
                    if k.lower() not in ("content-length", "transfer-encoding")
                ],
            }
        )
        try:
            await send({"type": "http.response.body", "body": response.content, "more_body": True})
        except httpx.ResponseNotRead:  # a streamed (event-stream) answer
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    @staticmethod
    async def _json(send: Any, payload: dict[str, Any], status: int = 200) -> None:
        raw = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": raw})

    @staticmethod
    async def _stream(send: Any, chunks: list[bytes]) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.sleep(0.005)
        await send({"type": "http.response.body", "body": b""})


class ThreadServer:
    """Serves an ASGI app with uvicorn on 127.0.0.1:0 in a background thread."""

    def __init__(self, app: Any) -> None:
        self.config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_config=None,
            access_log=False,
            ws="none",
        )
        self.server = uvicorn.Server(self.config)
        self.sock = self.config.bind_socket()
        self.port = int(self.sock.getsockname()[1])
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), daemon=True
        )

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "upstream did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
