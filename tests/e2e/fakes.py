"""The fake upstream of the end-to-end tests: the suite's one (tests/fixtures/upstream.py),
answering "Hello from upstream", listing model "m1", and passing Bedrock requests to the
SigV4-verifying FakeBedrock of the Bedrock tests, which answers with a real event stream.
"""

from __future__ import annotations

import httpx

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
from tests.fixtures.upstream import FakeUpstream, Reply, Seen

__all__ = ["ACCESS_KEY", "REGION", "SECRET_KEY", "Upstream"]


def _bedrock_reply(got: Received) -> httpx.Response:
    if got.action == "invoke":
        return json_ok(message_json("Hello from bedrock"))
    frames = [chunk_frame(e) for e in anthropic_events(("Hello", " from", " bedrock"))]
    return stream_ok(ChunkStream(frames))


class Upstream(FakeUpstream):
    def __init__(self) -> None:
        super().__init__("Hello from upstream", models=("m1",))
        self.bedrock = FakeBedrock()
        self.bedrock.respond = _bedrock_reply
        self.responder = self._reply

    async def _reply(self, seen: Seen) -> Reply:
        if not seen.path.startswith("/model/"):
            return self.default_reply(seen)
        request = httpx.Request(
            seen.method,
            f"http://{seen.headers.get('host', '')}{seen.target}",
            headers=list(seen.headers.items()),
            content=seen.body,
        )
        response = self.bedrock.handle(request)
        headers = {
            k: v
            for k, v in response.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding")
        }
        try:
            return Reply(response.status_code, response.content, headers)
        except httpx.ResponseNotRead:  # a streamed (event-stream) answer
            chunks = [chunk async for chunk in response.aiter_raw()]
            return Reply(response.status_code, headers=headers, chunks=chunks)
