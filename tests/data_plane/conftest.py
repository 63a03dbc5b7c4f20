"""Fixtures for the data-plane tests: real servers on 127.0.0.1 port 0, nothing mocked.

- `config_service`: a fake ConfigService (grpc.aio servicer) serving hand-built snapshots.
- `upstream`: the suite's fake OpenAI/Anthropic upstream (tests/fixtures/upstream.py).
- `start_bridge`: starts real `Bridge`s following `config_service`; all stopped afterwards.
- `start_recording_bridge`: the same, each handing its interception records to `records`.
- `serve` / `serve_recording`: publish version "1" with given providers, start a bridge on it.
- `both_providers`: an OpenAI and an Anthropic provider on the fake upstream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dp_fakes import (
    BRIDGE_TOKEN,
    BridgeSettingsFor,
    ConfigServer,
    FakeConfigService,
    ListSink,
    Serve,
    StartBridge,
    anthropic_provider,
    daemon_starter,
    openai_provider,
    snapshot,
    wait_for_version,
)

from aibridge.config.v1 import provider_pb2 as pb
from data_plane import dump
from data_plane.bridge.server import Bridge
from data_plane.bridge.settings import BridgeSettings
from tests.fixtures.upstream import FakeUpstream, Reply


@pytest.fixture
async def config_service() -> AsyncIterator[ConfigServer]:
    server = ConfigServer(FakeConfigService())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def bridge_settings(config_service: ConfigServer, tmp_path: Path) -> BridgeSettingsFor:
    """Settings of the index-th test bridge on the fake config service, `env` on top."""

    def settings(index: int, env: dict[str, str]) -> BridgeSettings:
        return BridgeSettings.from_env(_environ(config_service, tmp_path, index) | env)

    return settings


def _environ(config_service: ConfigServer, tmp_path: Path, index: int) -> dict[str, str]:
    return {
        "AIBRIDGE_BRIDGE_TOKEN": BRIDGE_TOKEN,
        "AIBRIDGE_BRIDGE_LISTEN": "127.0.0.1:0",
        "AIBRIDGE_CONFIG_SERVICE": config_service.target,
        "AIBRIDGE_NODE_ID": f"test-bridge-{index}",
        # Where a bridge spools records the fake config service cannot take.
        "AIBRIDGE_DATA_DIR": str(tmp_path / f"bridge-{index}-data"),
    }


@pytest.fixture
async def start_bridge(bridge_settings: BridgeSettingsFor) -> AsyncIterator[StartBridge]:
    def build(index: int, env: dict[str, str]) -> Bridge:
        return Bridge(bridge_settings(index, env))

    async with daemon_starter(build, wait_for_version) as start:
        yield start


@pytest.fixture
def oversized_reply(upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dump cap lowered to 5000 bytes, and the upstream answering 30000 bytes of "y"."""
    monkeypatch.setattr(dump, "MAX_DUMP_BODY", 5000)
    upstream.responder = lambda seen: Reply(chunks=[b"y" * 3000] * 10)


@pytest.fixture
def records() -> ListSink:
    return ListSink()


@pytest.fixture
async def start_recording_bridge(
    bridge_settings: BridgeSettingsFor, records: ListSink
) -> AsyncIterator[StartBridge]:
    def build(index: int, env: dict[str, str]) -> Bridge:
        return Bridge(bridge_settings(index, env), sink=records)

    async with daemon_starter(build, wait_for_version) as start:
        yield start


def _serving(config_service: ConfigServer, start: StartBridge) -> Serve:
    async def serve(*providers: pb.Provider, **env: str) -> str:
        await config_service.service.publish(snapshot("1", list(providers)))
        return (await start(wait_version="1", **env)).url

    return serve


@pytest.fixture
def serve(config_service: ConfigServer, start_bridge: StartBridge) -> Serve:
    """Factory: publish version "1" with these providers; a bridge on it (with these settings):
    its URL."""
    return _serving(config_service, start_bridge)


@pytest.fixture
def serve_recording(config_service: ConfigServer, start_recording_bridge: StartBridge) -> Serve:
    """`serve` with a recording bridge (its records in `records`)."""
    return _serving(config_service, start_recording_bridge)


@pytest.fixture
def both_providers(upstream: FakeUpstream) -> tuple[pb.Provider, pb.Provider]:
    """Provider `openai` and provider `anthropic`, both on the fake upstream."""
    return openai_provider(upstream), anthropic_provider(upstream)
