"""Buffers the bridge keeps per response stay bounded whatever the upstream sends."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from dp_fakes import (
    MEMBER_TOKEN,
    ConfigServer,
    StartBridge,
    dumped_body,
    first_dumped_response,
    openai_provider,
    snapshot,
)

from data_plane.bridge.interception.response import MAX_SSE_LINE, ResponseReader
from tests.fixtures.upstream import FakeUpstream


def test_sse_usage_reader_drops_a_line_that_never_ends() -> None:
    """An SSE stream without newlines does not grow the usage reader past one line's limit."""
    reader = ResponseReader(sse=True, content_encoding=None)
    for _ in range(50):
        reader.feed(b"x" * 100_000)
    assert len(reader._buf) <= MAX_SSE_LINE + 100_000
    reader.feed(b'\ndata: {"usage": {"prompt_tokens": 3, "completion_tokens": 4}}\n\n')
    assert reader.finish().tokens["input"] == 3


@pytest.mark.usefixtures("oversized_reply")
async def test_dumped_response_body_is_capped(
    config_service: ConfigServer, upstream: FakeUpstream, start_bridge: StartBridge, tmp_path: Path
) -> None:
    """A response larger than the dump cap reaches the client whole but is dumped only up to the cap."""
    await config_service.service.publish(snapshot("1", [openai_provider(upstream)]))
    bridge = await start_bridge(wait_version="1", AIBRIDGE_DUMP_DIR=str(tmp_path))
    async with httpx.AsyncClient(base_url=bridge.url) as http:
        reply = await http.post(
            "/openai/v1/chat/completions",
            json={"model": "m", "messages": []},
            headers={"authorization": f"Bearer {MEMBER_TOKEN}"},
        )
    assert len(reply.content) == 30_000
    body = dumped_body(await first_dumped_response(tmp_path, within=2))
    assert body.startswith(b"y" * 5000)
    assert body[5000:5001] == b"\n"
    assert b"25000 more bytes not dumped" in body
