"""The bridge end to end, as deployed: a real config service process, a real bridge process,
a fake upstream on a real socket, and the official SDKs unmodified but for base_url and api_key."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import grpc
import httpx
import openai
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import config_service_pb2_grpc as cs_grpc
from aibridge.config.v1 import provider_admin_service_pb2 as pa
from aibridge.config.v1 import provider_admin_service_pb2_grpc as pa_grpc
from aibridge.config.v1 import provider_pb2, token_pb2
from aibridge.config.v1 import token_admin_service_pb2 as ta
from aibridge.config.v1 import token_admin_service_pb2_grpc as ta_grpc
from tests.e2e.fakes import ACCESS_KEY, REGION, SECRET_KEY, Upstream
from tests.fixtures import processes
from tests.fixtures.services import (
    ADMIN_TOKEN,
    BRIDGE_TOKEN,
    StartProcess,
)
from tests.fixtures.upstream import ThreadedUpstream
from tests.fixtures.waits import eventually

POOL = ("sk-pool-FIRST-0123456789abcdef", "sk-pool-SECOND-0123456789abcdef")
ANT_KEY = "sk-ant-pool-0123456789abcdefgh"
ADMIN_MD = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


@dataclass
class Stack:
    upstream: Upstream
    config_target: str
    bridge_url: str
    token: str
    token_id: str

    def admin(self) -> grpc.Channel:
        return grpc.insecure_channel(self.config_target)


def wait_ready(url: str, timeout: float = 20) -> None:
    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    asyncio.run(eventually(ready, timeout))


@pytest.fixture
def stack(start_process: StartProcess, tmp_path: Path) -> Iterator[Stack]:
    upstream = Upstream()
    server = ThreadedUpstream(upstream).start()
    base = f"http://127.0.0.1:{server.port}"
    proc = start_process(
        AIBRIDGE_ENCRYPTION_KEYS="MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        AIBRIDGE_PROVIDER_0_TYPE="openai",
        AIBRIDGE_PROVIDER_0_NAME="oai",
        AIBRIDGE_PROVIDER_0_BASE_URL=f"{base}/v1/",
        AIBRIDGE_PROVIDER_0_KEYS=",".join(POOL),
        AIBRIDGE_PROVIDER_1_TYPE="anthropic",
        AIBRIDGE_PROVIDER_1_NAME="claude",
        AIBRIDGE_PROVIDER_1_BASE_URL=f"{base}/",
        AIBRIDGE_PROVIDER_1_KEY=ANT_KEY,
        AIBRIDGE_PROVIDER_2_TYPE="bedrock",
        AIBRIDGE_PROVIDER_2_NAME="aws",
        AIBRIDGE_PROVIDER_2_BEDROCK_BASE_URL=base,
        AIBRIDGE_PROVIDER_2_BEDROCK_REGION=REGION,
        AIBRIDGE_PROVIDER_2_BEDROCK_ACCESS_KEY=ACCESS_KEY,
        AIBRIDGE_PROVIDER_2_BEDROCK_ACCESS_KEY_SECRET=SECRET_KEY,
    )
    with grpc.insecure_channel(proc.target) as channel:
        made = ta_grpc.TokenAdminServiceStub(channel).CreateToken(
            ta.CreateTokenRequest(principal_name="dev", role=token_pb2.ROLE_MEMBER),
            metadata=ADMIN_MD,
        )
    bridge = processes.start(
        "bridge",
        ["bridge"],
        {
            "AIBRIDGE_CONFIG_SERVICE": proc.target,
            "AIBRIDGE_BRIDGE_TOKEN": BRIDGE_TOKEN,
            "AIBRIDGE_BRIDGE_LISTEN": "127.0.0.1:0",
            "AIBRIDGE_LOG_FORMAT": "json",
            "AIBRIDGE_NODE_ID": "e2e-bridge",
            "AIBRIDGE_DUMP_DIR": str(tmp_path / "dumps"),
            "AIBRIDGE_DATA_DIR": str(tmp_path / "bridge-data"),
        },
        tmp_path / "logs",
        "bridge listening",
    )
    try:
        url = str(bridge.ready["url"]).rstrip("/")
        wait_ready(url)
        yield Stack(upstream, proc.target, url, made.secret, made.token.id)
    finally:
        bridge.stop()
        server.stop()


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    """An HTTP client of the bridge with the member's gateway token."""
    headers = {"authorization": f"Bearer {stack.token}"}
    with httpx.Client(base_url=stack.bridge_url, headers=headers) as http:
        yield http


def gateway_token_never_upstream(stack: Stack) -> None:
    for seen in stack.upstream.seen:
        assert stack.token not in " ".join(seen.headers.values())
        assert "x-aibridge-token" not in seen.headers


def test_openai_sdk_blocking_and_streaming_use_the_pooled_key(stack: Stack) -> None:
    """The official OpenAI SDK gets correct blocking and streaming answers; the upstream sees the first pool key only."""
    with openai.OpenAI(
        base_url=f"{stack.bridge_url}/oai/v1", api_key=stack.token, max_retries=0
    ) as client:
        reply = client.chat.completions.create(
            model="gpt-x", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == "Hello from upstream"
        with client.chat.completions.create(
            model="gpt-x", messages=[{"role": "user", "content": "hi"}], stream=True
        ) as stream:
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "Hello from upstream"
        assert [m.id for m in client.models.list()] == ["m1"]
    auth = {s.headers.get("authorization") for s in stack.upstream.seen}
    assert auth == {f"Bearer {POOL[0]}"}
    gateway_token_never_upstream(stack)


def anthropic_sdk_texts(stack: Stack, provider: str, model: str, stream_model: str) -> list[str]:
    """What the official Anthropic SDK reads from `provider`: a blocking message, then a stream."""
    messages: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hi"}]
    with anthropic.Anthropic(
        base_url=f"{stack.bridge_url}/{provider}", api_key=stack.token, max_retries=0
    ) as client:
        message = client.messages.create(model=model, max_tokens=10, messages=messages)
        with client.messages.stream(model=stream_model, max_tokens=10, messages=messages) as stream:
            return [message.content[0].text, "".join(stream.text_stream)]  # type: ignore[union-attr]


def test_anthropic_sdk_blocking_and_streaming_use_the_pooled_key(stack: Stack) -> None:
    """The official Anthropic SDK gets correct blocking and streaming answers with the pooled x-api-key."""
    texts = anthropic_sdk_texts(stack, "claude", "claude-x", "claude-x")
    assert texts == ["Hello from upstream"] * 2
    assert {s.headers.get("x-api-key") for s in stack.upstream.seen} == {ANT_KEY}
    gateway_token_never_upstream(stack)


def test_bedrock_through_the_anthropic_sdk_is_sigv4_signed(stack: Stack) -> None:
    """Anthropic-format calls to a Bedrock provider reach InvokeModel(+stream) correctly signed and come back as Anthropic."""
    texts = anthropic_sdk_texts(stack, "aws", "claude-test-large", "claude-test-haiku")
    assert texts == ["Hello from bedrock"] * 2
    fake = stack.upstream.bedrock
    assert not fake.rejected
    assert [r.action for r in fake.received] == ["invoke", "invoke-with-response-stream"]
    assert fake.received[1].model_id.endswith("haiku-4-5-20251001-v1:0")
    assert all(r.access_key == ACCESS_KEY for r in fake.received)


def test_providers_created_disabled_and_deleted_while_traffic_flows(
    stack: Stack, client: httpx.Client
) -> None:
    """A provider created through the admin API serves at once; disabled it answers 503; deleted it is gone (404)."""
    upstream_base = f"http://127.0.0.1:{_upstream_port(stack)}/v1/"
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/late/v1/chat/completions", json=body).status_code == 404
    with stack.admin() as channel:
        admin = pa_grpc.ProviderAdminServiceStub(channel)
        admin.CreateProvider(
            pa.CreateProviderRequest(
                name="late",
                type=provider_pb2.PROVIDER_TYPE_OPENAI,
                base_url=upstream_base,
                keys=["sk-late-0123456789abcdefghij"],
            ),
            metadata=ADMIN_MD,
        )
        asyncio.run(
            eventually(
                lambda: client.post("/late/v1/chat/completions", json=body).status_code == 200, 2
            )
        )
        admin.UpdateProvider(
            pa.UpdateProviderRequest(
                id_or_name="late", enabled=False, update_mask=FieldMask(paths=["enabled"])
            ),
            metadata=ADMIN_MD,
        )
        asyncio.run(
            eventually(
                lambda: client.post("/late/v1/chat/completions", json=body).status_code == 503, 2
            )
        )
        assert "provider_disabled" in client.post("/late/v1/chat/completions", json=body).text
        admin.DeleteProvider(pa.DeleteProviderRequest(id_or_name="late"), metadata=ADMIN_MD)
        asyncio.run(
            eventually(
                lambda: client.post("/late/v1/chat/completions", json=body).status_code == 404, 2
            )
        )
    # The other providers kept serving all along.
    assert client.post("/oai/v1/chat/completions", json=body).status_code == 200


def _upstream_port(stack: Stack) -> int:
    with stack.admin() as channel:
        snap = cs_grpc.ConfigServiceStub(channel).GetProviderSnapshot(
            cs.GetProviderSnapshotRequest(), metadata=ADMIN_MD
        )
    url = next(p.base_url for p in snap.snapshot.providers if p.name == "oai")
    return int(httpx.URL(url).port or 0)


def test_revoked_token_is_refused_on_the_next_request(stack: Stack, client: httpx.Client) -> None:
    """Revoking the gateway token in the config service makes the bridge answer 401 right after."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/oai/v1/chat/completions", json=body).status_code == 200
    with stack.admin() as channel:
        ta_grpc.TokenAdminServiceStub(channel).RevokeToken(
            ta.RevokeTokenRequest(id=stack.token_id), metadata=ADMIN_MD
        )
    asyncio.run(
        eventually(lambda: client.post("/oai/v1/chat/completions", json=body).status_code == 401, 2)
    )


def test_the_bridge_acknowledges_the_current_version(stack: Stack) -> None:
    """ListSubscribers shows the bridge with the current version sent and acknowledged."""
    with stack.admin() as channel:
        stub = cs_grpc.ConfigServiceStub(channel)
        version = stub.GetProviderSnapshot(
            cs.GetProviderSnapshotRequest(), metadata=ADMIN_MD
        ).snapshot.version

        def acked() -> bool:
            subs = stub.ListSubscribers(cs.ListSubscribersRequest(), metadata=ADMIN_MD).subscribers
            bridge = [s for s in subs if s.node_id == "e2e-bridge"]
            return bool(bridge) and bridge[0].version_acked == version == bridge[0].version_sent

        asyncio.run(eventually(acked, 5))
