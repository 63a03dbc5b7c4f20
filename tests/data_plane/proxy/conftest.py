"""Proxy test fixtures: an in-process proxy following the fake config service, and an
echo server to tunnel to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dp_fakes import BRIDGE_TOKEN, ConfigServer, daemon_starter
from proxy_fakes import Echo, StartProxy, wait_for_proxy_version

from data_plane.proxy.server import Proxy
from data_plane.proxy.settings import ProxySettings


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
