"""Coder's runtime option names: honoured as aliases where we have the setting, refused
(naming the variable) where we have none and ignoring it would change security."""

from __future__ import annotations

from pathlib import Path

import pytest

from aibridge.envconfig import SettingsError
from config_service.settings import ConfigServiceSettings
from data_plane.bridge.settings import BreakerSettings, BridgeSettings
from data_plane.proxy.settings import ProxySettings

BRIDGE = {"AIBRIDGE_BRIDGE_TOKEN": "test-bridge-token-0123456789abcdef"}
PROXY = {"AIBRIDGE_PROXY_TOKEN": "test-proxy-token-0123456789abcdef"}


@pytest.mark.parametrize("prefix", ["CODER_AI_GATEWAY_", "CODER_AIBRIDGE_"])
def test_config_service_honours_coders_allow_byok(prefix: str, tmp_path: Path) -> None:
    """A Coder deployment's ALLOW_BYOK=false switches BYOK off (it was silently on)."""
    env = {"AIBRIDGE_DATA_DIR": str(tmp_path), f"{prefix}ALLOW_BYOK": "false"}
    assert ConfigServiceSettings.from_env(env).allow_byok is False


def test_bridge_honours_coders_dump_dir_breaker_and_byok(tmp_path: Path) -> None:
    """Coder's dump dir, the five breaker options and ALLOW_BYOK configure the bridge."""
    settings = BridgeSettings.from_env(
        {
            **BRIDGE,
            "CODER_AI_GATEWAY_DUMP_DIR": str(tmp_path / "dumps"),
            "CODER_AI_GATEWAY_ALLOW_BYOK": "false",
            "CODER_AI_GATEWAY_CIRCUIT_BREAKER_ENABLED": "true",
            "CODER_AI_GATEWAY_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "2",
            "CODER_AI_GATEWAY_CIRCUIT_BREAKER_INTERVAL": "1m",
            "CODER_AIBRIDGE_CIRCUIT_BREAKER_TIMEOUT": "5s",
            "CODER_AI_GATEWAY_CIRCUIT_BREAKER_MAX_REQUESTS": "1",
        }
    )
    assert settings.dump_dir == tmp_path / "dumps"
    assert settings.allow_byok is False
    assert settings.breaker == BreakerSettings(True, 2, 60.0, 5.0, 1)


def test_proxy_honours_coders_proxy_options(tmp_path: Path) -> None:
    """Coder's proxy dump dir, MITM CA pair, listen address and private CIDRs are read."""
    settings = ProxySettings.from_env(
        {
            **PROXY,
            "CODER_AI_GATEWAY_PROXY_DUMP_DIR": str(tmp_path / "dumps"),
            "CODER_AI_GATEWAY_PROXY_CERT_FILE": str(tmp_path / "ca.pem"),
            "CODER_AI_GATEWAY_PROXY_KEY_FILE": str(tmp_path / "ca-key.pem"),
            "CODER_AI_GATEWAY_PROXY_LISTEN_ADDR": "127.0.0.1:18888",
            "CODER_AI_GATEWAY_PROXY_ALLOWED_PRIVATE_CIDRS": "10.0.0.0/8",
        }
    )
    assert settings.dump_dir == tmp_path / "dumps"
    assert settings.ca_paths == (tmp_path / "ca.pem", tmp_path / "ca-key.pem")
    assert settings.listen_port == 18888
    assert [str(c) for c in settings.allowed_private_cidrs] == ["10.0.0.0/8"]


def test_ours_wins_when_equal_and_a_conflict_is_refused(tmp_path: Path) -> None:
    """The same value under both names is fine; different values name both variables."""
    same = {
        **BRIDGE,
        "AIBRIDGE_DUMP_DIR": str(tmp_path),
        "CODER_AI_GATEWAY_DUMP_DIR": str(tmp_path),
    }
    assert BridgeSettings.from_env(same).dump_dir == tmp_path
    with pytest.raises(SettingsError) as info:
        BridgeSettings.from_env({**same, "CODER_AI_GATEWAY_DUMP_DIR": "/elsewhere"})
    assert info.value.problems == [
        "AIBRIDGE_DUMP_DIR and CODER_AI_GATEWAY_DUMP_DIR are set to different values; "
        "keep only AIBRIDGE_DUMP_DIR"
    ]


def test_a_bad_aliased_value_names_the_coder_variable() -> None:
    """A malformed value read from a Coder name is reported under that name."""
    with pytest.raises(SettingsError) as info:
        BridgeSettings.from_env({**BRIDGE, "CODER_AIBRIDGE_CIRCUIT_BREAKER_TIMEOUT": "soon"})
    assert info.value.problems == [
        "CODER_AIBRIDGE_CIRCUIT_BREAKER_TIMEOUT='soon': expected a duration such as 30s or 500ms"
    ]


@pytest.mark.parametrize(
    ("settings", "env", "variable"),
    [
        (BridgeSettings, BRIDGE, "CODER_AI_GATEWAY_RATE_LIMIT"),
        (BridgeSettings, BRIDGE, "CODER_AIBRIDGE_MAX_CONCURRENCY"),
        (ProxySettings, PROXY, "CODER_AI_GATEWAY_PROXY_TLS_CERT_FILE"),
        (ProxySettings, PROXY, "CODER_AI_GATEWAY_PROXY_UPSTREAM"),
    ],
)
def test_security_option_without_equivalent_refuses_start_up(
    settings: type[BridgeSettings] | type[ProxySettings], env: dict[str, str], variable: str
) -> None:
    """A Coder option we cannot honour and that changes security stops start-up, named."""
    value = "http://user:hunter2-secret@corp-proxy:3128"
    with pytest.raises(SettingsError) as info:
        settings.from_env({**env, variable: value})
    [problem] = info.value.problems
    assert problem.startswith(f"{variable} is set, but AI Bridge has no equivalent (")
    assert "hunter2" not in problem


def test_security_option_left_off_is_accepted() -> None:
    """Coder's "off" value of an option we do not have (rate limit 0) starts normally."""
    env = {**BRIDGE, "CODER_AI_GATEWAY_RATE_LIMIT": "0", "CODER_AI_GATEWAY_MAX_CONCURRENCY": "0"}
    assert BridgeSettings.from_env(env).allow_byok is True
