"""Proxy test fixtures: an in-process proxy following the fake config service, a bridge and
proxy stack in front of the fake upstream, and an echo server to tunnel to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dp_fakes import BRIDGE_TOKEN, ConfigServer, StartBridge, daemon_starter, snapshot
from proxy_fakes import Echo, StartProxy, StartStack, providers, wait_for_proxy_version

from data_plane.proxy.server import Proxy
from data_plane.proxy.settings import ProxySettings
from tests.fixtures.upstream import FakeUpstream


@pytest.fixture
async def start_proxy(config_service: ConfigServer, tmp_path: Path) -> AsyncIterator[StartProxy]:
    def build(index: int, env: dict[str, str]) -> Proxy:
        # The fake config service accepts one token whatever the role; scope is its concern.
        environ = {
            "AIBRIDGE_PROXY_TOKEN": BRIDGE_TOKEN,
            "AIBRIDGE_PROXY_LISTEN": "127.0.0.1:0",
            "AIBRIDGE_CONFIG_SERVICE": config_service.target,
            "AIBRIDGE_DATA_DIR": str(tmp_path / "proxy-data"),
            "AIBRIDGE_NODE_ID": f"test-proxy-{index}",
            **env,
        }
        return Proxy(ProxySettings.from_env(environ))

    async with daemon_starter(build, wait_for_proxy_version) as start:
        yield start


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    server = Echo()
    await server.start()
    yield server
    assert server.server is not None
    server.server.close()


@pytest.fixture
def start_stack(
    config_service: ConfigServer,
    upstream: FakeUpstream,
    start_bridge: StartBridge,
    start_proxy: StartProxy,
) -> StartStack:
    """`await start_stack(**env)`: a bridge on `providers(upstream)` and a proxy (with `env`)
    in front of it, both on version 1."""

    async def start(**env: str) -> Proxy:
        await config_service.service.publish(snapshot("1", providers(upstream)))
        bridge = await start_bridge(wait_version="1")
        return await start_proxy(wait_version="1", AIBRIDGE_PROXY_BRIDGE_URL=bridge.url, **env)

    return start


@pytest.fixture
def start_bare_proxy(config_service: ConfigServer, start_proxy: StartProxy) -> StartProxy:
    """`await start_bare_proxy(**env)`: a proxy with no providers, on version 1."""

    async def start(**env: str) -> Proxy:
        await config_service.service.publish(snapshot("1", []))
        return await start_proxy(wait_version="1", **env)

    return start


@pytest.fixture
def start_tunnel_proxy(start_bare_proxy: StartProxy, echo: Echo) -> StartProxy:
    """`await start_tunnel_proxy(**env)`: a proxy with no providers that may tunnel to `echo`
    (its port allowed, loopback allowed), on version 1."""

    async def start(**env: str) -> Proxy:
        return await start_bare_proxy(
            AIBRIDGE_PROXY_ALLOWED_PORTS=str(echo.port),
            AIBRIDGE_PROXY_ALLOWED_PRIVATE_CIDRS="127.0.0.0/8",
            **env,
        )

    return start
