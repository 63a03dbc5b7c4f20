"""OpenTelemetry end to end, as deployed: a config service, a bridge and a proxy (real
processes) exporting over OTLP to a receiver in the test (gRPC for the config service
and the bridge, HTTP for the proxy), and the official OpenAI SDK through the proxy.

The proxy intercepts `localhost` (the openai provider's base URL host), so the SDK
speaks HTTPS to it through CONNECT + MITM with the proxy CA, as in test_proxy_e2e.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from dataclasses import dataclass

import grpc
import httpx
import openai
import pytest

from aibridge.config.v1 import provider_admin_service_pb2 as pa
from aibridge.config.v1 import provider_admin_service_pb2_grpc as pa_grpc
from aibridge.config.v1 import provider_pb2, token_pb2
from aibridge.config.v1 import token_admin_service_pb2 as ta
from aibridge.config.v1 import token_admin_service_pb2_grpc as ta_grpc
from tests.fixtures.otlp import Receiver, Span
from tests.fixtures.processes import Proc
from tests.fixtures.services import ADMIN_TOKEN, BRIDGE_TOKEN, PROXY_TOKEN, Procs, StartProcess
from tests.fixtures.upstream import FakeUpstream
from tests.fixtures.waits import eventually

KEY = "sk-otel-pooled-key-0123456789abcdef"
NEW_KEY = "sk-otel-new-provider-key-0123456789"
PROMPT = "summarise the quarterly secret numbers"
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
WRITE_TRACE = "0af7651916cd43dd8448eb211c80319c"
SERVER, CLIENT, PRODUCER = 2, 3, 4  # OTLP span kinds


def otel_env(endpoint: str, protocol: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # read by the SDK itself: export spans at once
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
    }


@dataclass
class Stack:
    target: str
    proxy: str
    member: str
    upstream: FakeUpstream
    ca: ssl.SSLContext
    receiver: Receiver


@pytest.fixture
async def stack(
    start_process: StartProcess, procs: Procs, upstream: FakeUpstream, receiver: Receiver
) -> Stack:
    grpc_env = otel_env(receiver.grpc_endpoint, "grpc")
    config, secret = await seeded(
        start_process, f"http://localhost:{upstream.port}/v1/", **grpc_env
    )
    bridge = procs.bridge(config.target, "otel-bridge", **grpc_env)
    proxy = procs.proxy(
        config.target,
        str(bridge.ready["url"]),
        "otel-proxy",
        **otel_env(receiver.http_endpoint, "http/protobuf"),
    )
    listen = str(proxy.ready["listen"])
    async with httpx.AsyncClient() as plain:
        pem = (await plain.get(f"http://{listen}/ca-cert.pem")).text

        async def ready() -> bool:
            return (await plain.get(f"http://{listen}/readyz")).status_code == 200

        await eventually(ready)
    return Stack(
        config.target,
        listen,
        secret,
        upstream,
        ssl.create_default_context(cadata=pem),
        receiver,
    )


async def seeded(start_process: StartProcess, base_url: str, **env: str) -> tuple[Proc, str]:
    """A config service with provider `openai` at `base_url` (and `env`), and a member token."""
    config = start_process(
        AIBRIDGE_PROVIDER_0_TYPE="openai",
        AIBRIDGE_PROVIDER_0_KEY=KEY,
        AIBRIDGE_PROVIDER_0_BASE_URL=base_url,
        **env,
    )
    async with grpc.aio.insecure_channel(config.target) as channel:
        created = await ta_grpc.TokenAdminServiceStub(channel).CreateToken(
            ta.CreateTokenRequest(principal_name="dev", role=token_pb2.ROLE_MEMBER),
            metadata=ADMIN,
        )
    return config, str(created.secret)


async def serves_a_chat(url: str, secret: str) -> None:
    """Wait until the bridge at `url` answers a chat completion with 200."""
    async with httpx.AsyncClient(base_url=url) as http:

        async def served() -> bool:
            response = await http.post(
                "/openai/v1/chat/completions",
                json={"model": "gpt-test", "messages": []},
                headers={"authorization": f"Bearer {secret}"},
            )
            return response.status_code == 200

        await eventually(served)


def _one(spans: list[Span], **match: object) -> Span | None:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    return found[0] if len(found) == 1 else None


def _assert_no_secret(spans: list[Span], *secrets: str) -> None:
    """No span name or attribute value (of any span received) holds a secret or the prompt."""
    text = json.dumps([[s.name, s.attributes] for s in spans], default=str)
    for secret in secrets:
        assert secret not in text


async def sdk_chat_through_the_proxy(stack: Stack) -> str:
    """An OpenAI SDK chat completion (the prompt PROMPT) through the proxy: its answer."""
    proxy_url = f"http://dev:{stack.member}@{stack.proxy}"
    async with httpx.AsyncClient(proxy=proxy_url, verify=stack.ca, timeout=10) as http:
        base_url = f"https://localhost:{stack.upstream.port}/v1"
        client = openai.AsyncOpenAI(
            base_url=base_url, api_key=stack.member, http_client=http, max_retries=0
        )
        messages = [{"role": "user", "content": PROMPT}]
        reply = await client.chat.completions.create(model="gpt-test", messages=messages)
    return str(reply.choices[0].message.content)


def proxied_trace(receiver: Receiver) -> tuple[Span, Span, Span] | None:
    """(the proxy's request span, the bridge's call span below it, the attempt below that),
    once the receiver has all three."""
    spans = receiver.spans()
    proxied = _one(spans, service="aibridge-proxy", name="POST openai")
    if proxied is None:
        return None
    bridge = _one(spans, service="aibridge-bridge", kind=SERVER, parent_id=proxied.span_id)
    if bridge is None:
        return None
    attempt = _one(spans, service="aibridge-bridge", kind=CLIENT, parent_id=bridge.span_id)
    return None if attempt is None else (proxied, bridge, attempt)


def assert_one_pooled_chat(call: Span) -> None:
    """`call` is the bridge's GenAI span of one pooled, completed chat gpt-test (7 + 2 tokens)."""
    assert call.name == "chat gpt-test"
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-test",
        "gen_ai.response.model": "gpt-test",
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 2,
        "gen_ai.response.finish_reasons": ("stop",),
        "aibridge.credential.kind": "pooled",
        "aibridge.outcome": "completed",
        "aibridge.attempts": 1,
    }
    assert {name: call.attributes.get(name) for name in expected} == expected


async def test_sdk_call_through_proxy_and_bridge_is_one_trace(stack: Stack) -> None:
    """An OpenAI SDK call through the proxy yields one trace: the proxy's request span, the bridge's GenAI span as its child and the upstream attempt below that, with the token counts; and the GenAI histograms are exported."""
    assert await sdk_chat_through_the_proxy(stack) == "Hello"
    receiver = stack.receiver
    await eventually(lambda: proxied_trace(receiver))
    found = proxied_trace(receiver)
    assert found is not None
    proxied, bridge, attempt = found
    assert proxied.trace_id == bridge.trace_id == attempt.trace_id
    # The CONNECT span ends with its session, once the client has closed it.
    await eventually(lambda: _one(receiver.spans(), service="aibridge-proxy", name="CONNECT"))
    connect = _one(receiver.spans(), service="aibridge-proxy", name="CONNECT")
    assert connect is not None and proxied.links == [(connect.trace_id, connect.span_id)]
    assert proxied.attributes["http.response.status_code"] == 200
    assert proxied.attributes["aibridge.request_id"] == bridge.attributes["aibridge.request_id"]
    assert_one_pooled_chat(bridge)
    assert attempt.attributes["http.response.status_code"] == 200
    # The upstream saw the attempt's context, in the trace the proxy started.
    assert stack.upstream.seen[-1].headers["traceparent"].split("-")[1:3] == [
        attempt.trace_id,
        attempt.span_id,
    ]

    await eventually(
        lambda: (
            {"gen_ai.client.token.usage", "gen_ai.client.operation.duration"}
            <= receiver.metric_names()
        )
    )
    tokens = receiver.metric_points("gen_ai.client.token.usage")
    assert sum(p.sum for p in tokens) >= 9
    assert receiver.transports == {"grpc", "http"}
    _assert_no_secret(
        receiver.spans(), KEY, stack.member, ADMIN_TOKEN, BRIDGE_TOKEN, PROXY_TOKEN, PROMPT
    )


async def test_admin_write_rebuild_and_sends_are_one_trace(stack: Stack) -> None:
    """An admin write carrying a traceparent is one trace: its RPC span, the snapshot rebuild it caused, and a send span per subscriber stream (bridge and proxy) under the rebuild."""
    metadata = (*ADMIN, ("traceparent", f"00-{WRITE_TRACE}-b7ad6b7169203331-01"))
    base_url = f"http://localhost:{stack.upstream.port}/v1/"
    request = pa.CreateProviderRequest(
        name="second", type=provider_pb2.PROVIDER_TYPE_OPENAI, base_url=base_url, keys=[NEW_KEY]
    )
    async with grpc.aio.insecure_channel(stack.target) as channel:
        await pa_grpc.ProviderAdminServiceStub(channel).CreateProvider(request, metadata=metadata)
    receiver = stack.receiver

    def write_trace() -> list[Span]:
        return [s for s in receiver.spans() if s.trace_id == WRITE_TRACE]

    def complete() -> bool:
        # The RPC's span ends after its answer: the sends may be exported before it.
        spans = write_trace()
        nodes = {s.attributes.get("aibridge.node_id") for s in spans}
        return {"otel-bridge", "otel-proxy"} <= nodes and any(s.kind == SERVER for s in spans)

    await eventually(complete)
    spans = write_trace()
    rpc = _one(spans, name="aibridge.config.v1.ProviderAdminService/CreateProvider")
    assert rpc is not None and rpc.kind == SERVER
    assert rpc.parent_id == "b7ad6b7169203331"
    assert rpc.attributes["rpc.grpc.status_code"] == 0
    # On PostgreSQL the commit's NOTIFY may rebuild first; either way one rebuild under
    # the write published its revision.
    (rebuild,) = [
        s
        for s in spans
        if s.name == "snapshot rebuild"
        and s.parent_id == rpc.span_id
        and s.attributes["aibridge.snapshot.published"]
    ]
    sends = [s for s in spans if s.name == "snapshot send"]
    assert {s.parent_id for s in sends} == {rebuild.span_id}
    assert {s.kind for s in sends} == {PRODUCER}
    assert {s.attributes["aibridge.snapshot.scope"] for s in sends} >= {"bridge", "proxy"}
    version = rebuild.attributes["aibridge.snapshot.version"]
    assert {s.attributes["aibridge.snapshot.version"] for s in sends} == {version}
    _assert_no_secret(receiver.spans(), NEW_KEY, KEY, ADMIN_TOKEN, BRIDGE_TOKEN, PROXY_TOKEN)


async def test_a_stopped_bridge_flushes_its_last_spans(
    start_process: StartProcess, procs: Procs, upstream: FakeUpstream, receiver: Receiver
) -> None:
    """A bridge told to stop (SIGTERM) exports the spans still buffered before it exits, however long its export delay."""
    config, secret = await seeded(start_process, f"{upstream.url}/v1/")
    env = {**otel_env(receiver.grpc_endpoint, "grpc"), "OTEL_BSP_SCHEDULE_DELAY": "600000"}
    bridge = procs.bridge(config.target, "flushing-bridge", **env)
    await serves_a_chat(str(bridge.ready["url"]), secret)
    assert not [s for s in receiver.spans() if s.service == "aibridge-bridge"]
    await asyncio.to_thread(bridge.stop)  # the receiver answers on this loop meanwhile
    assert bridge.popen.returncode == 0
    assert any(s.name == "chat gpt-test" for s in receiver.spans())


async def test_a_bridge_whose_collector_is_away_still_serves_and_stops(
    start_process: StartProcess, procs: Procs, upstream: FakeUpstream
) -> None:
    """With the OTLP endpoint unreachable the bridge answers as usual, and a SIGTERM still ends it cleanly (its flush gives up) rather than by SIGKILL."""
    config, secret = await seeded(start_process, f"{upstream.url}/v1/")
    gone = socket.socket()
    gone.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        env = otel_env(f"http://127.0.0.1:{gone.getsockname()[1]}", "grpc")
        bridge = procs.bridge(config.target, "lonely-bridge", **env)
        await serves_a_chat(str(bridge.ready["url"]), secret)
        await asyncio.to_thread(bridge.stop)
        assert bridge.popen.returncode == 0
    finally:
        gone.close()
