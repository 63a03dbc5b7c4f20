"""Fixtures for the data-plane tests: real servers on 127.0.0.1 port 0, nothing mocked.

- `config_service`: a fake ConfigService (grpc.aio servicer) serving hand-built snapshots.
- `upstream`: a fake OpenAI/Anthropic upstream (raw ASGI app under uvicorn).
- `start_bridge`: starts real `Bridge`s following `config_service`; all stopped afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import uvicorn
from dp_fakes import (
    BRIDGE_TOKEN,
    ConfigServer,
    FakeConfigService,
    FakeUpstream,
    QuietServer,
    StartBridge,
    daemon_starter,
    wait_for_version,
)

from data_plane.bridge.server import Bridge
from data_plane.bridge.settings import BridgeSettings
from tests.fixtures.waits import eventually


@pytest.fixture
async def config_service() -> AsyncIterator[ConfigServer]:
    server = ConfigServer(FakeConfigService())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    app = FakeUpstream()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_config=None,
        access_log=False,
        ws="none",
        timeout_graceful_shutdown=1,
    )
    server = QuietServer(config)
    sock = config.bind_socket()
    app.port = sock.getsockname()[1]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await eventually(lambda: server.started)
    yield app
    server.should_exit = True
    await task


@pytest.fixture
async def start_bridge(config_service: ConfigServer) -> AsyncIterator[StartBridge]:
    def build(index: int, env: dict[str, str]) -> Bridge:
        environ = {
            "AIBRIDGE_BRIDGE_TOKEN": BRIDGE_TOKEN,
            "AIBRIDGE_BRIDGE_LISTEN": "127.0.0.1:0",
            "AIBRIDGE_CONFIG_SERVICE": config_service.target,
            "AIBRIDGE_NODE_ID": f"test-bridge-{index}",
            **env,
        }
        return Bridge(BridgeSettings.from_env(environ))

    async with daemon_starter(build, wait_for_version) as start:
        yield start
