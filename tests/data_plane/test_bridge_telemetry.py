"""The bridge's OpenTelemetry: the call's SERVER span with the GenAI attributes, a CLIENT
span per upstream attempt, W3C trace context in and out, and the GenAI histograms.

The providers are the SDK's own, with its in-memory exporter and metric reader (the
export seam), so what is asserted is exactly what an OTLP exporter would be handed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from dp_fakes import (
    BRIDGE_TOKEN,
    KEY_A,
    KEY_B,
    MEMBER_TOKEN,
    ConfigServer,
    StartBridge,
    anthropic_provider,
    openai_provider,
    snapshot,
    wait_for_version,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from aibridge.telemetry import Telemetry
from data_plane.bridge.server import Bridge
from data_plane.bridge.settings import BridgeSettings
from tests.fixtures.upstream import FakeUpstream, Reply, Seen
from tests.fixtures.waits import eventually

PROMPT = "tell me the secret plan"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"


@dataclass
class Traced:
    bridge: Bridge
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def server_span(self) -> ReadableSpan:
        (span,) = [s for s in self.finished() if s.kind is SpanKind.SERVER]
        return span

    def attempts(self) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.kind is SpanKind.CLIENT]


@pytest.fixture
async def traced(config_service: ConfigServer, upstream: FakeUpstream) -> AsyncIterator[Traced]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry = Telemetry(tracer_provider, MeterProvider(metric_readers=[reader]))
    settings = BridgeSettings.from_env(
        {
            "AIBRIDGE_BRIDGE_TOKEN": BRIDGE_TOKEN,
            "AIBRIDGE_BRIDGE_LISTEN": "127.0.0.1:0",
            "AIBRIDGE_CONFIG_SERVICE": config_service.target,
            "AIBRIDGE_NODE_ID": "traced-bridge",
        }
    )
    bridge = Bridge(settings, telemetry=telemetry)
    await config_service.service.publish(
        snapshot(
            "1",
            [
                openai_provider(upstream, keys=[KEY_A, KEY_B]),
                anthropic_provider(upstream),
            ],
        )
    )
    await bridge.start()
    try:
        await wait_for_version(bridge, "1")
        yield Traced(bridge, spans, reader)
    finally:
        await bridge.stop()


def _chat(stream: bool = False) -> dict[str, Any]:
    return {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": stream,
    }


async def chat(url: str, **headers: str) -> httpx.Response:
    """A member's chat completion through the bridge at `url`, with these extra headers."""
    async with httpx.AsyncClient(base_url=url) as http:
        return await http.post(
            "/openai/v1/chat/completions",
            json=_chat(),
            headers={"authorization": f"Bearer {MEMBER_TOKEN}", **headers},
        )


def _attribute_text(spans: list[ReadableSpan]) -> str:
    return json.dumps([dict(s.attributes or {}) for s in spans] + [s.name for s in spans])


async def test_chat_call_is_one_server_span_with_genai_attributes(
    traced: Traced, upstream: FakeUpstream
) -> None:
    """A chat completion yields a SERVER span named for the operation and model, with the semconv attributes, the token counts and the request id the client was answered with."""
    response = await chat(traced.bridge.url)
    assert response.status_code == 200
    await eventually(lambda: len(traced.finished()) == 2)
    span = traced.server_span()
    attributes = dict(span.attributes or {})
    assert span.name == "chat gpt-test"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == attributes["gen_ai.system"] == "openai"
    assert attributes["gen_ai.request.model"] == "gpt-test"
    assert attributes["gen_ai.response.model"] == "gpt-test"
    assert attributes["gen_ai.usage.input_tokens"] == 7
    assert attributes["gen_ai.usage.output_tokens"] == 2
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["aibridge.provider.name"] == "openai"
    assert attributes["aibridge.principal.id"] == "p-0"
    assert attributes["aibridge.credential.kind"] == "pooled"
    assert attributes["aibridge.attempts"] == 1
    assert attributes["aibridge.outcome"] == "completed"
    assert attributes["http.response.status_code"] == 200
    assert attributes["aibridge.request_id"] == response.headers["x-aibridge-request-id"]


async def test_traceparent_is_continued_and_the_attempt_carries_it_upstream(
    traced: Traced, upstream: FakeUpstream
) -> None:
    """The client's traceparent is the call span's parent, and the upstream receives the attempt span's own traceparent in its place."""
    await chat(traced.bridge.url, traceparent=TRACEPARENT)
    await eventually(lambda: len(traced.finished()) == 2)
    server = traced.server_span()
    (attempt,) = traced.attempts()
    assert f"{server.context.trace_id:032x}" == CLIENT_TRACE
    assert server.parent is not None and f"{server.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert attempt.parent is not None and attempt.parent.span_id == server.context.span_id
    sent = upstream.seen[-1].headers["traceparent"]
    assert sent == f"00-{CLIENT_TRACE}-{attempt.context.span_id:016x}-01"
    attributes = dict(attempt.attributes or {})
    assert attributes["http.response.status_code"] == 200
    assert attributes["server.address"] == "127.0.0.1"
    assert "?" not in str(attributes["url.full"])


async def test_failover_is_one_attempt_span_per_key(traced: Traced, upstream: FakeUpstream) -> None:
    """A 429 on the first key and a 200 on the next are two CLIENT spans under one call span that counts two attempts."""

    def reply(seen: Seen) -> Reply:
        if seen.headers.get("authorization") == f"Bearer {KEY_A}":
            return Reply(429, b'{"error":{"message":"slow down"}}', {"retry-after": "30"})
        return upstream.default_reply(seen)

    upstream.responder = reply
    response = await chat(traced.bridge.url)
    assert response.status_code == 200
    await eventually(lambda: len(traced.finished()) == 3)
    attempts = sorted(traced.attempts(), key=lambda s: s.start_time or 0)
    statuses = [dict(s.attributes or {})["http.response.status_code"] for s in attempts]
    assert statuses == [429, 200]
    assert dict(traced.server_span().attributes or {})["aibridge.attempts"] == 2


async def test_anthropic_stream_reads_usage_model_and_stop_reason(
    traced: Traced, upstream: FakeUpstream
) -> None:
    """A streamed Anthropic message gives the span its token counts, response model and stop reason from the stream."""
    body = {"model": "claude-test", "max_tokens": 5, "stream": True, "messages": []}
    async with httpx.AsyncClient(base_url=traced.bridge.url) as http:
        response = await http.post(
            "/anthropic/v1/messages", json=body, headers={"x-api-key": MEMBER_TOKEN}
        )
    assert response.status_code == 200
    await eventually(lambda: len(traced.finished()) == 2)
    attributes = dict(traced.server_span().attributes or {})
    assert attributes["gen_ai.provider.name"] == "anthropic"
    assert attributes["gen_ai.response.model"] == "claude-test"
    assert attributes["gen_ai.usage.input_tokens"] == 11
    assert attributes["gen_ai.usage.output_tokens"] == 3
    assert attributes["gen_ai.response.finish_reasons"] == ("end_turn",)


async def test_genai_histograms_use_the_semconv_buckets(traced: Traced) -> None:
    """gen_ai.client.token.usage (per token type) and gen_ai.client.operation.duration are recorded with the conventions' bucket boundaries."""
    await chat(traced.bridge.url)
    data = traced.metrics.get_metrics_data()
    assert data is not None
    found = {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    usage = found["gen_ai.client.token.usage"]
    points = {dict(p.attributes or {})["gen_ai.token.type"]: p for p in usage.data.data_points}
    assert (points["input"].sum, points["output"].sum) == (7, 2)
    assert points["input"].explicit_bounds[:3] == (1, 4, 16)
    assert dict(points["input"].attributes or {})["gen_ai.provider.name"] == "openai"
    (duration,) = found["gen_ai.client.operation.duration"].data.data_points
    assert duration.count == 1
    assert duration.explicit_bounds[:2] == (0.01, 0.02)


async def test_no_prompt_key_or_token_reaches_a_span(traced: Traced) -> None:
    """No attribute or span name holds the prompt, a pooled key or the gateway token, on success or on a key failover."""
    async with httpx.AsyncClient(base_url=traced.bridge.url) as http:
        await http.post(
            "/openai/v1/chat/completions?key=" + KEY_A,
            json=_chat(stream=True),
            headers={"authorization": f"Bearer {MEMBER_TOKEN}"},
        )
    await eventually(lambda: len(traced.finished()) >= 2)
    text = _attribute_text(traced.finished())
    for secret in (PROMPT, KEY_A, KEY_B, MEMBER_TOKEN, BRIDGE_TOKEN):
        assert secret not in text


async def test_a_model_name_with_a_lone_surrogate_is_exported_as_valid_text(
    traced: Traced,
) -> None:
    """A requested model that is not valid UTF-8 once decoded (a lone surrogate) is cleaned, so the export batch still encodes."""
    body = b'{"model": "gpt-\\ud800x", "messages": []}'
    async with httpx.AsyncClient(base_url=traced.bridge.url) as http:
        await http.post(
            "/openai/v1/chat/completions",
            content=body,
            headers={"authorization": f"Bearer {MEMBER_TOKEN}"},
        )
    await eventually(lambda: len(traced.finished()) == 2)
    model = dict(traced.server_span().attributes or {})["gen_ai.request.model"]
    assert isinstance(model, str)
    model.encode("utf-8")
    assert model.startswith("gpt-")


async def test_with_telemetry_off_the_clients_traceparent_goes_upstream_untouched(
    config_service: ConfigServer, upstream: FakeUpstream, start_bridge: StartBridge
) -> None:
    """Off, the bridge adds no trace context of its own: the client's traceparent reaches the upstream as it was sent."""
    await config_service.service.publish(snapshot("1", [openai_provider(upstream)]))
    bridge = await start_bridge(wait_version="1")
    assert bridge.telemetry is None
    await chat(bridge.url, traceparent=TRACEPARENT)
    assert upstream.seen[-1].headers["traceparent"] == TRACEPARENT


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        "00-" + "0" * 32 + "-" + "0" * 16 + "-01",
        "00-" + "a" * 8000,
        "ff-" + "1" * 60,
    ],
)
async def test_a_malformed_traceparent_starts_a_new_trace(
    traced: Traced, upstream: FakeUpstream, traceparent: str
) -> None:
    """A traceparent that does not parse (or is all zeros, or huge) is ignored: the call is answered and its span starts a trace of its own."""
    response = await chat(traced.bridge.url, traceparent=traceparent)
    assert response.status_code == 200
    await eventually(lambda: len(traced.finished()) == 2)
    server = traced.server_span()
    assert server.parent is None
    assert upstream.seen[-1].headers["traceparent"] != traceparent
