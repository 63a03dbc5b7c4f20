"""End to end with real processes: config service → bridge and proxy → fake upstream.

The fake upstream runs in the test (127.0.0.1, plain HTTP). Providers are seeded with base
URLs the bridge can reach: `openai` at http://localhost:<port>/v1/ and `anthropic` at
http://127.0.0.1:<port>/, so the proxy intercepts the hosts `localhost` and `127.0.0.1`.
Clients still speak HTTPS to those hosts through the proxy (CONNECT + MITM with the
proxy CA): the proxy never dials an intercepted host, so the scheme and port of the
client's URL do not matter to it. `zz-openai` shares `localhost` and loses it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import grpc
import httpx
import httpx2
import openai
import pytest
from dp_fakes import (
    KEY_A,
    KEY_B,
)
from proxy_fakes import Echo

from aibridge import rulebook
from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import config_service_pb2_grpc as cs_grpc
from aibridge.config.v1 import provider_admin_service_pb2 as pa
from aibridge.config.v1 import provider_admin_service_pb2_grpc as pa_grpc
from aibridge.config.v1 import provider_pb2 as pb
from aibridge.config.v1 import token_admin_service_pb2 as ta
from aibridge.config.v1 import token_admin_service_pb2_grpc as ta_grpc
from aibridge.config.v1 import token_pb2
from tests.fixtures.processes import Proc
from tests.fixtures.services import (
    ADMIN_TOKEN,
    PROXY_TOKEN,
    Procs,
    StartProcess,
)
from tests.fixtures.upstream import FakeUpstream
from tests.fixtures.waits import eventually

ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
EXTRA_HOST = "10.255.255.1"  # private: refused as a tunnel, intercepted once a provider


@dataclass
class Stack:
    target: str  # config service
    proxy: str  # host:port
    member: str  # a gateway token of the member role
    upstream: FakeUpstream
    ca: ssl.SSLContext
    database_url: str
    proxy_daemon: Proc

    def proxy_url(self) -> str:
        return f"http://dev:{self.member}@{self.proxy}"

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(proxy=self.proxy_url(), verify=self.ca, timeout=10)


@pytest.fixture
async def echo2() -> AsyncIterator[Echo]:
    """An echo server on 127.0.0.2: 127.0.0.1 is intercepted in this stack."""
    server = Echo()
    await server.start("127.0.0.2")
    yield server
    assert server.server is not None
    server.server.close()


@pytest.fixture
async def stack(
    start_process: StartProcess,
    upstream: FakeUpstream,
    echo2: Echo,
    procs: Procs,
    database_url: str,
    tmp_path: Path,
) -> Stack:
    port = upstream.port
    seed = {
        "AIBRIDGE_PROVIDER_0_TYPE": "openai",
        "AIBRIDGE_PROVIDER_0_KEY": KEY_A,
        "AIBRIDGE_PROVIDER_0_BASE_URL": f"http://localhost:{port}/v1/",
        "AIBRIDGE_PROVIDER_1_TYPE": "anthropic",
        "AIBRIDGE_PROVIDER_1_KEY": KEY_A,
        "AIBRIDGE_PROVIDER_1_BASE_URL": f"http://127.0.0.1:{port}/",
        "AIBRIDGE_PROVIDER_2_TYPE": "openai",
        "AIBRIDGE_PROVIDER_2_NAME": "zz-openai",
        "AIBRIDGE_PROVIDER_2_KEY": KEY_B,
        "AIBRIDGE_PROVIDER_2_BASE_URL": f"http://localhost:{port}/v1/",
    }
    config = start_process(**seed)
    async with grpc.aio.insecure_channel(config.target) as channel:
        created = await ta_grpc.TokenAdminServiceStub(channel).CreateToken(
            ta.CreateTokenRequest(principal_name="dev", role=token_pb2.ROLE_MEMBER),
            metadata=ADMIN,
        )
    bridge = procs.bridge(config.target, "e2e-bridge")
    proxy = procs.proxy(
        config.target,
        str(bridge.ready["url"]),
        "e2e-proxy",
        AIBRIDGE_PROXY_ALLOWED_PORTS=f"80,443,{echo2.port}",
    )
    listen = str(proxy.ready["listen"])
    async with httpx.AsyncClient() as plain:
        pem = (await plain.get(f"http://{listen}/ca-cert.pem")).text

        async def ready() -> bool:
            return (await plain.get(f"http://{listen}/readyz")).status_code == 200

        await eventually(ready, within=10)
    return Stack(
        config.target,
        listen,
        created.secret,
        upstream,
        ssl.create_default_context(cadata=pem),
        database_url,
        proxy,
    )


def _never_saw(stack: Stack, token: str) -> None:
    assert stack.upstream.seen, "the upstream was not reached"
    for seen in stack.upstream.seen:
        assert token not in json.dumps(seen.headers)
        assert "x-aibridge-token" not in seen.headers


async def test_sdks_reach_the_upstream_through_proxy_and_bridge(stack: Stack) -> None:
    """The official SDKs, pointed at the provider hosts through the proxy, get answers
    with the pooled key injected; the upstream never sees the gateway token."""
    port = stack.upstream.port
    async with stack.http() as http:
        gpt = openai.AsyncOpenAI(
            base_url=f"https://localhost:{port}/v1",
            api_key=stack.member,
            http_client=http,
            max_retries=0,
        )
        reply = await gpt.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == "Hello"
        assert stack.upstream.seen[-1].headers["authorization"] == f"Bearer {KEY_A}"
        stream = await gpt.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert "".join([c.choices[0].delta.content or "" async for c in stream]) == "Hello"

    # This anthropic SDK release is built on httpx2 and refuses httpx clients.
    async with httpx2.AsyncClient(proxy=stack.proxy_url(), verify=stack.ca, timeout=10) as http2:
        claude = anthropic.AsyncAnthropic(
            base_url=f"https://127.0.0.1:{port}",
            api_key=stack.member,
            http_client=http2,
            max_retries=0,
        )
        async with claude.messages.stream(
            model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        ) as events:
            assert "".join([t async for t in events.text_stream]) == "Hello"
        assert stack.upstream.seen[-1].headers["x-api-key"] == KEY_A
    _never_saw(stack, stack.member)
    logged = "".join(stack.proxy_daemon.lines)
    assert '"event": "provider request"' in logged
    assert stack.member not in logged and PROXY_TOKEN not in logged


class RawClient:
    """One client connection to the proxy, speaking CONNECT by hand (keep-alive)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, stack: Stack) -> RawClient:
        host, port = stack.proxy.rsplit(":", 1)
        return cls(*await asyncio.open_connection(host, int(port)))

    async def connect(self, target: str, token: str) -> int:
        auth = base64.b64encode(f"dev:{token}".encode()).decode()
        self.writer.write(
            f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
            f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        length = [
            int(h.split(b":")[1])
            for h in head.lower().split(b"\r\n")
            if h.startswith(b"content-length:")
        ]
        await self.reader.readexactly(length[0] if length else 0)
        return int(head.split(b" ")[1])

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def test_tunnels_and_refusals(stack: Stack, echo2: Echo) -> None:
    """A non-provider host is tunnelled byte for byte; a port outside the allow-list and
    a private address outside the allowed CIDRs are refused with 403."""
    # 127.0.0.1 is a provider host here (intercepted); the echo server listens on .2.
    client = await RawClient.open(stack)
    assert await client.connect(f"127.0.0.2:{echo2.port}", "not-a-token") == 407
    assert await client.connect("127.0.0.2:1", stack.member) == 403  # port not allowed
    assert await client.connect(f"{EXTRA_HOST}:443", stack.member) == 403  # private
    assert await client.connect(f"127.0.0.2:{echo2.port}", stack.member) == 200
    client.writer.write(b"through the tunnel")
    assert await client.reader.readexactly(18) == b"through the tunnel"
    await client.close()


async def _subscribers(target: str) -> dict[str, cs.Subscriber]:
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await cs_grpc.ConfigServiceStub(channel).ListSubscribers(
            cs.ListSubscribersRequest(), metadata=ADMIN
        )
    return {s.node_id: s for s in reply.subscribers}


async def _both_acked(target: str, previous: str = "") -> tuple[str, cs.Subscriber]:
    """Wait until bridge and proxy acknowledged the same version (newer than previous)."""
    found: list[cs.Subscriber] = []

    async def agreed() -> bool:
        subs = await _subscribers(target)
        bridge, proxy = subs.get("e2e-bridge"), subs.get("e2e-proxy")
        if (
            bridge is not None
            and proxy is not None
            and proxy.version_acked
            and proxy.version_acked == bridge.version_acked == proxy.version_sent
            and proxy.version_acked != previous
        ):
            found.append(proxy)
        return bool(found)

    await eventually(agreed, within=10, every=0.05)
    return found[0].version_acked, found[0]


async def _connect_status(stack: Stack, host: str) -> int:
    client = await RawClient.open(stack)
    try:
        return await client.connect(f"{host}:443", stack.member)
    finally:
        await client.close()


async def _create_extra(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.target) as channel:
        try:
            await pa_grpc.ProviderAdminServiceStub(channel).CreateProvider(
                pa.CreateProviderRequest(
                    name="extra",
                    type=pb.PROVIDER_TYPE_OPENAI,
                    base_url=f"https://{EXTRA_HOST}/v1/",
                    keys=[KEY_B],
                ),
                metadata=ADMIN,
            )
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
    # No admin service yet: write through the store; the service's resync picks it up.
    await asyncio.to_thread(_store_call, stack.database_url, "create")


async def _delete_extra(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.target) as channel:
        try:
            await pa_grpc.ProviderAdminServiceStub(channel).DeleteProvider(
                pa.DeleteProviderRequest(id_or_name="extra"), metadata=ADMIN
            )
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
    await asyncio.to_thread(_store_call, stack.database_url, "delete")


def _store_call(database_url: str, action: str) -> None:
    from config_service.crypto import Cipher
    from config_service.db.engine import make_engine
    from config_service.rbac import SYSTEM
    from config_service.store import providers
    from config_service.store.database import Database

    db = Database(make_engine(database_url), Cipher())
    try:
        if action == "create":
            spec = rulebook.ProviderSpec(
                name="extra", type="openai", base_url=f"https://{EXTRA_HOST}/v1/", keys=(KEY_B,)
            )
            providers.create_provider(db, SYSTEM, spec)
        else:
            providers.delete_provider(db, SYSTEM, "extra")
    finally:
        db.engine.dispose()


async def test_provider_changes_reach_the_proxy_without_restart(stack: Stack) -> None:
    """Bridge and proxy acknowledge the same version (the proxy reporting the provider
    that lost its shared host); adding and removing a provider changes what the proxy
    intercepts, with no restart."""
    version, proxy = await _both_acked(stack.target)
    assert [e.provider_name for e in proxy.errors] == ["zz-openai"]
    assert await _connect_status(stack, EXTRA_HOST) == 403

    await _create_extra(stack)
    version, _ = await _both_acked(stack.target, version)
    assert await _connect_status(stack, EXTRA_HOST) == 200  # intercepted now

    await _delete_extra(stack)
    await _both_acked(stack.target, version)
    assert await _connect_status(stack, EXTRA_HOST) == 403
