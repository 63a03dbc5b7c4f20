"""Following the config service: ACK/NACK, reconnects, the snapshot cache, Bedrock seam."""

from __future__ import annotations

import asyncio
import contextlib
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from dp_fakes import (
    AUTH,
    BRIDGE_TOKEN,
    CHAT,
    BridgeSettingsFor,
    ConfigServer,
    StartBridge,
    openai_provider,
    provider,
    snapshot,
    wait_for_version,
)
from structlog.testing import capture_logs

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import provider_pb2 as pb
from aibridge.limits import MAX_REPORT_TEXT
from aibridge.masking import Secret
from data_plane import snapshot_cache
from data_plane.bridge.cli import main
from data_plane.bridge.settings import BridgeSettings
from data_plane.subscriber import Subscriber, SubscriberConfig
from tests.fixtures.settings import refusal
from tests.fixtures.upstream import FakeUpstream
from tests.fixtures.waits import eventually


async def test_ack_lists_providers_left_out(
    config_service: ConfigServer, upstream: FakeUpstream, start_bridge: StartBridge
) -> None:
    """An applied snapshot is ACKed with the providers that failed to build; the rest serve."""
    # Keys without their secrets: what a token of another role than bridge would receive.
    unkeyed = provider("unkeyed", pb.PROVIDER_TYPE_ANTHROPIC, upstream.url, keys=[""])
    bad_type = provider("mystery", 99, upstream.url)
    await config_service.service.publish(
        snapshot("1", [openai_provider(upstream), unkeyed, bad_type])
    )
    bridge = await start_bridge(wait_version="1")
    report = await config_service.service.wait_report("1")
    assert report.applied and report.node_id == "test-bridge-0"
    errors = {e.provider_name: e.message for e in report.errors}
    assert set(errors) == {"unkeyed", "mystery"}
    assert "unsupported provider type" in errors["mystery"]
    assert "carry no secret" in errors["unkeyed"]
    async with httpx.AsyncClient(base_url=bridge.url, headers=AUTH) as http:
        assert (await http.post("/openai/v1/chat/completions", json=CHAT)).status_code == 200
        mystery = await http.post("/mystery/v1/chat/completions", json=CHAT)
        unbuilt = await http.post(
            "/unkeyed/v1/messages", json={"model": "m", "max_tokens": 8, "messages": []}
        )
        ready = await http.get("/readyz")
    # A provider the bridge cannot build says why, in its API's shape (not a bare 404).
    assert mystery.status_code == 503
    assert mystery.json()["error"]["code"] == "provider_error"
    assert "unsupported provider type" in mystery.json()["error"]["message"]
    assert unbuilt.status_code == 503
    assert unbuilt.json()["type"] == "error"  # Anthropic's format: the provider speaks its API
    assert unbuilt.json()["error"]["message"].startswith(
        "provider_error: AI provider 'unkeyed' cannot be used: keys carry no secret"
    )
    assert ready.status_code == 200  # openai still serves


async def test_not_ready_when_no_enabled_provider_builds(
    config_service: ConfigServer, upstream: FakeUpstream, start_bridge: StartBridge
) -> None:
    """Enabled providers none of which build: /readyz 503 with the reason, and one warning."""
    broken = provider("broken", pb.PROVIDER_TYPE_OPENAI, upstream.url, keys=[""])
    off = openai_provider(upstream, "off", status=pb.PROVIDER_STATUS_DISABLED)
    await config_service.service.publish(snapshot("1", [broken, off]))
    with capture_logs() as logs:
        bridge = await start_bridge(wait_version="1")
    async with httpx.AsyncClient(base_url=bridge.url) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {
            "ready": False,
            "version": "1",
            "reason": "no enabled provider could be built: broken: keys carry no secret "
            "(is the bridge token of the bridge role?)",
        }
        await config_service.service.publish(snapshot("2", [openai_provider(upstream)]))
        await wait_for_version(bridge, "2")
        assert (await http.get("/readyz")).status_code == 200
    warnings = [e for e in logs if e["log_level"] == "warning" and "all enabled" in e["event"]]
    assert warnings == [
        {
            "event": "all enabled providers failed to build; only disabled providers remain",
            "log_level": "warning",
            "version": "1",
            "failed": 1,
        }
    ]


async def test_bedrock_provider_uses_the_factory(
    config_service: ConfigServer, bridge_settings: BridgeSettingsFor
) -> None:
    """Without the Bedrock factory a Bedrock provider is reported 'bedrock support not available'."""
    from data_plane.bridge.server import Bridge

    region = pb.BedrockSettings(region="us-east-1")
    bedrock = provider("bedrock", pb.PROVIDER_TYPE_BEDROCK, "", bedrock=region)
    await config_service.service.publish(snapshot("1", [bedrock]))
    bridge = Bridge(bridge_settings(0, {}), bedrock_factory=None)
    await bridge.start()
    try:
        report = await config_service.service.wait_report("1")
    finally:
        await bridge.stop()
    assert [e.message for e in report.errors] == ["bedrock support not available"]


Apply = Callable[[cs.ProviderSnapshot], Awaitable[list[cs.ProviderError]]]


async def reports_of(
    config_service: ConfigServer, apply: Apply, *versions: str
) -> tuple[Subscriber, list[cs.ReportStatusRequest]]:
    """A subscriber applying with `apply` while each version is published in turn; the
    report (ACK or NACK) of each."""
    sub = Subscriber(SubscriberConfig(config_service.target, Secret(BRIDGE_TOKEN), "n1"), apply)
    task = asyncio.create_task(sub.run())
    reports = []
    try:
        for version in versions:
            await config_service.service.publish(snapshot(version, []))
            reports.append(await config_service.service.wait_report(version))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return sub, reports


async def test_nack_when_apply_raises(config_service: ConfigServer) -> None:
    """A snapshot the daemon cannot apply is NACKed and the previous version kept."""
    calls: list[str] = []

    async def apply(snap: cs.ProviderSnapshot) -> list[cs.ProviderError]:
        calls.append(snap.version)
        if snap.version == "2":
            raise RuntimeError("boom")
        return []

    sub, (_, nack) = await reports_of(config_service, apply, "1", "2")
    assert not nack.applied and "boom" in nack.error_detail
    assert sub.state.applied_version == "1"


async def test_older_or_malformed_versions_are_refused_and_reported(
    config_service: ConfigServer,
) -> None:
    """A snapshot older than the applied one, or with a malformed version, is never applied: it is NACKed and the stream dropped; newer ones still apply (compared as numbers)."""
    calls: list[str] = []

    async def apply(snap: cs.ProviderSnapshot) -> list[cs.ProviderError]:
        calls.append(snap.version)
        return []

    fake = config_service.service
    sub, (_, older, malformed, newer) = await reports_of(
        config_service, apply, "5", "4", "v6", "10"
    )
    assert not older.applied and "older than the applied version 5" in older.error_detail
    assert not malformed.applied and "malformed" in malformed.error_detail
    assert newer.applied
    assert calls == ["5", "10"] and sub.state.applied_version == "10"
    # Each refusal dropped the stream; every resume still claimed the applied version.
    assert [w.known_version for w in fake.watches[1:3]] == ["5", "5"]


async def test_a_lower_version_of_another_history_is_taken(config_service: ConfigServer) -> None:
    """A snapshot of another database history (a restore) is applied whatever its version; a lower one of that history is then refused, and resumes claim it."""
    calls: list[str] = []

    async def apply(snap: cs.ProviderSnapshot) -> list[cs.ProviderError]:
        calls.append(f"{snap.history}:{snap.version}")
        return []

    fake = config_service.service
    sub = Subscriber(SubscriberConfig(config_service.target, Secret(BRIDGE_TOKEN), "n1"), apply)
    task = asyncio.create_task(sub.run())
    reports = []
    try:
        for history, version in (("old", "9"), ("new", "4"), ("new", "3")):
            published = snapshot(version, [])
            published.history = history
            await fake.publish(published)
            reports.append(await fake.wait_report(version))
        await eventually(lambda: len(fake.watches) >= 2, within=5)  # resumed after the refusal
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    taken, restored, older = reports
    assert taken.applied and restored.applied
    assert not older.applied and "older than the applied version 4" in older.error_detail
    assert calls == ["old:9", "new:4"]
    assert (sub.state.applied_history, sub.state.applied_version) == ("new", "4")
    assert (fake.watches[1].known_history, fake.watches[1].known_version) == ("new", "4")


async def test_a_cached_snapshot_with_a_malformed_version_is_ignored(tmp_path: Path) -> None:
    """A snapshot cache whose version is not a revision is not applied."""
    cache = tmp_path / "snapshot.bin"
    snapshot_cache.save(cache, snapshot("not-a-revision", []))
    calls: list[str] = []

    async def apply(snap: cs.ProviderSnapshot) -> list[cs.ProviderError]:
        calls.append(snap.version)
        return []

    config = SubscriberConfig("127.0.0.1:1", Secret(BRIDGE_TOKEN), "n1", cache_file=cache)
    sub = Subscriber(config, apply)
    assert not await sub.load_cache()
    assert not calls and not sub.state.applied_version


async def test_reports_stay_within_the_config_service_bounds(config_service: ConfigServer) -> None:
    """An overlong exception or build error is clipped to the report's bounds, so the config service accepts the NACK/ACK."""
    long = "x" * (MAX_REPORT_TEXT + 500)

    async def apply(snap: cs.ProviderSnapshot) -> list[cs.ProviderError]:
        if snap.version == "2":
            raise RuntimeError(long)
        return [cs.ProviderError(provider_name="alpha", message=long)]

    _, (ack, nack) = await reports_of(config_service, apply, "1", "2")
    assert ack.errors[0].message == long[:MAX_REPORT_TEXT]
    assert len(nack.error_detail) == MAX_REPORT_TEXT and nack.error_detail.startswith(
        "RuntimeError"
    )


async def test_bad_token_keeps_retrying(config_service: ConfigServer) -> None:
    """A refused token is retried with backoff and nothing is applied."""

    async def apply(snap: cs.ProviderSnapshot) -> list[cs.ProviderError]:
        raise AssertionError("must not apply")

    await config_service.service.publish(snapshot("1", []))
    sub = Subscriber(SubscriberConfig(config_service.target, Secret("wrong"), "n1"), apply)
    task = asyncio.create_task(sub.run())
    await eventually(lambda: sub.state.reconnects >= 2, within=5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert sub.state.reconnects >= 2 and not sub.state.applied_version


async def test_config_service_restart(
    config_service: ConfigServer, upstream: FakeUpstream, start_bridge: StartBridge
) -> None:
    """The bridge serves while the config service is down and resumes with known_version."""
    await config_service.service.publish(snapshot("1", [openai_provider(upstream)]))
    bridge = await start_bridge(wait_version="1")
    await config_service.stop()
    await eventually(lambda: not bridge.subscriber.state.connected)  # it has seen the outage
    async with httpx.AsyncClient(base_url=bridge.url, headers=AUTH) as http:
        assert (await http.post("/openai/v1/chat/completions", json=CHAT)).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        await config_service.service.publish(snapshot("2", [openai_provider(upstream, "o2")]))
        await config_service.start()
        await wait_for_version(bridge, "2")
        assert config_service.service.watches[-1].known_version == "1"
        assert (await http.post("/o2/v1/chat/completions", json=CHAT)).status_code == 200


async def test_snapshot_cache_serves_without_config_service(
    config_service: ConfigServer, upstream: FakeUpstream, start_bridge: StartBridge, tmp_path: Path
) -> None:
    """A fresh bridge with the cache file serves the last snapshot with no config service."""
    cache = tmp_path / "cache" / "snapshot.bin"
    await config_service.service.publish(snapshot("5", [openai_provider(upstream)]))
    await start_bridge(wait_version="5", AIBRIDGE_SNAPSHOT_CACHE=str(cache))
    await config_service.service.wait_report("5")
    await eventually(cache.exists, within=2)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    await config_service.stop()
    fresh = await start_bridge(AIBRIDGE_SNAPSHOT_CACHE=str(cache))
    assert fresh.app.table.version == "5"
    async with httpx.AsyncClient(base_url=fresh.url, headers=AUTH) as http:
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.post("/openai/v1/chat/completions", json=CHAT)).status_code == 200


def test_settings_report_every_problem() -> None:
    """Every bad setting is reported at once."""
    bad = {
        "AIBRIDGE_ALLOW_BYOK": "maybe",
        "AIBRIDGE_CIRCUIT_BREAKER_TIMEOUT": "soon",
        "AIBRIDGE_BRIDGE_LISTEN": "nowhere",
    }
    assert len(refusal(BridgeSettings.from_env, bad).problems) == 4


def test_flags_win_over_environment() -> None:
    """A flag overrides the same setting from the environment."""
    settings = BridgeSettings.from_env(
        {"AIBRIDGE_BRIDGE_TOKEN": BRIDGE_TOKEN, "AIBRIDGE_BRIDGE_LISTEN": "127.0.0.1:1"},
        {"AIBRIDGE_BRIDGE_LISTEN": "127.0.0.1:2"},
    )
    assert settings.listen_port == 2 and BRIDGE_TOKEN not in repr(settings)


def test_cli_without_token_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`aibridge bridge` without a bridge token exits 2 with a clear message."""
    monkeypatch.delenv("AIBRIDGE_BRIDGE_TOKEN", raising=False)
    assert main([], prog="aibridge bridge") == 2
    assert "AIBRIDGE_BRIDGE_TOKEN is not set" in capsys.readouterr().err
