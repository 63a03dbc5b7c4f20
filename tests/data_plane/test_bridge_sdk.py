"""The official OpenAI and Anthropic SDKs through the bridge to a fake upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from dp_fakes import (
    KEY_A,
    MEMBER_TOKEN,
    Serve,
)

from aibridge.config.v1.provider_pb2 import Provider
from tests.fixtures.upstream import FakeUpstream


@pytest.fixture
async def url(serve: Serve, both_providers: tuple[Provider, Provider]) -> str:
    """A bridge serving an OpenAI and an Anthropic provider, both on the fake upstream."""
    return await serve(*both_providers)


def sdk_options(base_url: str) -> dict[str, Any]:
    """An SDK client's options: the bridge route, the member's token, no retries of its own."""
    return {"base_url": base_url, "api_key": MEMBER_TOKEN, "max_retries": 0}


@pytest.fixture
async def openai_client(url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(**sdk_options(f"{url}/openai/v1")) as client:
        yield client


@pytest.fixture
async def anthropic_client(url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(**sdk_options(f"{url}/anthropic")) as client:
        yield client


async def metrics_of(url: str) -> str:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{url}/metrics")).text


def _assert_pooled(upstream: FakeUpstream, header: str, expected: str) -> None:
    seen = upstream.seen[-1]
    assert seen.headers[header] == expected
    assert MEMBER_TOKEN not in str(seen.headers)
    assert "x-aibridge-token" not in seen.headers


async def test_openai_blocking(openai_client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    """A blocking chat completion reaches the upstream with the pooled key, never the token."""
    reply = await openai_client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "Hello"
    assert upstream.seen[-1].path == "/v1/chat/completions"
    _assert_pooled(upstream, "authorization", f"Bearer {KEY_A}")


async def test_openai_streaming_counts_tokens(
    openai_client: openai.AsyncOpenAI, upstream: FakeUpstream, url: str
) -> None:
    """A streamed chat completion arrives chunk by chunk and its usage is counted."""
    stream = await openai_client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == "Hello"
    _assert_pooled(upstream, "authorization", f"Bearer {KEY_A}")
    metrics = await metrics_of(url)
    assert 'aibridged_tokens_total{model="gpt-test",provider="openai",type="output"} 2.0' in metrics


async def test_openai_models_passthrough(
    openai_client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    """Listing models is passed through to the upstream with the pooled key."""
    models = [m.id async for m in openai_client.models.list()]
    assert models == ["gpt-test"]
    assert upstream.seen[-1].path == "/v1/models"
    _assert_pooled(upstream, "authorization", f"Bearer {KEY_A}")


async def test_anthropic_blocking(
    anthropic_client: anthropic.AsyncAnthropic, upstream: FakeUpstream
) -> None:
    """A blocking Anthropic message goes upstream with the pooled key as x-api-key only."""
    message = await anthropic_client.messages.create(
        model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].text == "Hello"  # type: ignore[union-attr]
    assert upstream.seen[-1].path == "/v1/messages"
    _assert_pooled(upstream, "x-api-key", KEY_A)
    assert "authorization" not in upstream.seen[-1].headers


async def test_anthropic_streaming(
    anthropic_client: anthropic.AsyncAnthropic, upstream: FakeUpstream, url: str
) -> None:
    """A streamed Anthropic message is relayed event by event and its usage is counted."""
    async with anthropic_client.messages.stream(
        model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "Hello"
    assert final.usage.output_tokens == 3
    _assert_pooled(upstream, "x-api-key", KEY_A)
    metrics = await metrics_of(url)
    assert 'model="claude-test",provider="anthropic",type="input"} 11.0' in metrics
    assert 'model="claude-test",provider="anthropic",type="output"} 3.0' in metrics
