"""Proxy test fixtures: an in-process proxy following the fake config service, and an
echo server to tunnel to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dp_fakes import BRIDGE_TOKEN, ConfigServer
from proxy_fakes import Echo, StartProxy, wait_for_proxy_version

from data_plane.proxy.server import Proxy
from data_plane.proxy.settings import ProxySettings


@pytest.fixture
async def start_proxy(config_service: ConfigServer, tmp_path: Path) -> AsyncIterator[StartProxy]:
    started: list[Proxy] = []

    async def start(wait_version: str | None = None, **env: str) -> Proxy:
        # The fake config service accepts one token whatever the role; scope is its concern.
        environ = {
            "AIBRIDGE_PROXY_TOKEN": BRIDGE_TOKEN,
            "AIBRIDGE_PROXY_LISTEN": "127.0.0.1:0",
            "AIBRIDGE_CONFIG_SERVICE": config_service.target,
            "AIBRIDGE_DATA_DIR": str(tmp_path / "proxy-data"),
            "AIBRIDGE_NODE_ID": f"test-proxy-{len(started)}",
            **env,
        }
        proxy = Proxy(ProxySettings.from_env(environ))
        await proxy.start()
        started.append(proxy)
        if wait_version is not None:
            await wait_for_proxy_version(proxy, wait_version)
        return proxy

    yield start
    for proxy in started:
        await proxy.stop()


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    server = Echo()
    await server.start()
    yield server
    assert server.server is not None
    server.server.close()
