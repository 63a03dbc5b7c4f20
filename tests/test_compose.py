"""compose.yaml: the production-shaped stack is wired the way the code reads it."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import yaml

from aibridge.client import CLIENT
from config_service.settings import SETTINGS as CONFIG_SERVICE
from console.server import SETTINGS as CONSOLE
from data_plane.bridge.settings import SETTINGS as BRIDGE
from data_plane.proxy.settings import SETTINGS as PROXY

ROOT = Path(__file__).resolve().parent.parent
READ_BY = {
    "config-service": {s.env for s in CONFIG_SERVICE.settings}
    | {
        "AIBRIDGE_OPENAI_KEY",
        "AIBRIDGE_OPENAI_BASE_URL",
        "AIBRIDGE_ANTHROPIC_KEY",
        "AIBRIDGE_ANTHROPIC_BASE_URL",
    },
    "bridge": {s.env for s in BRIDGE.settings},
    "proxy": {s.env for s in PROXY.settings},
    "console": {s.env for s in CONSOLE.settings},
}


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_runs_postgres_two_config_replicas_bridge_proxy_and_console() -> None:
    """The stack has PostgreSQL, two config-service replicas, the bridge, the proxy and the console."""
    services = compose()["services"]
    assert set(services) == {"postgres", "config-service", "bridge", "proxy", "console"}
    assert services["config-service"]["deploy"]["replicas"] == 2
    for name in ("config-service", "bridge", "proxy", "console"):
        assert services[name]["build"] == "."
        assert services[name]["command"][0] == name


def test_every_service_has_a_health_check_and_a_restart_policy() -> None:
    """Each service declares a health check and restarts on failure."""
    for name, service in compose()["services"].items():
        assert "healthcheck" in service, name
        assert service["restart"] == "unless-stopped", name


def test_every_variable_set_is_one_the_code_reads() -> None:
    """Each AIBRIDGE_* variable compose sets for a process is a setting that process reads."""
    for name, service in compose()["services"].items():
        if name == "postgres":
            continue
        unread = set(service["environment"]) - READ_BY[name]
        assert not unread, (name, unread)


def test_secrets_come_from_interpolation_and_only_where_needed() -> None:
    """Tokens and keys are interpolated from .env, and the data plane never gets the admin token or keys."""
    services = compose()["services"]
    for name in ("bridge", "proxy", "console"):
        env = services[name]["environment"]
        assert "AIBRIDGE_ADMIN_TOKEN" not in env and "AIBRIDGE_ENCRYPTION_KEYS" not in env
    assert not [v for v in services["console"]["environment"].values() if "TOKEN" in str(v)]
    for value in services["config-service"]["environment"].values():
        if re.search(r"TOKEN|KEY", str(value)) and str(value).startswith("$"):
            assert str(value).startswith("${AIBRIDGE_")


def test_daemons_point_at_the_config_service_and_the_bridge() -> None:
    """Bridge and proxy follow the config-service replicas, and the proxy forwards to the bridge."""
    services = compose()["services"]
    assert services["bridge"]["environment"]["AIBRIDGE_CONFIG_SERVICE"] == "config-service:7443"
    assert services["proxy"]["environment"]["AIBRIDGE_PROXY_BRIDGE_URL"] == "http://bridge:8080"
    assert {s.env for s in CLIENT.settings} >= {"AIBRIDGE_CONFIG_SERVICE"}


def test_the_config_service_grpc_port_is_published_on_loopback_for_the_host_cli() -> None:
    """Each replica's gRPC port is published on 127.0.0.1, starting at 7443, so the host's CLI reaches it."""
    service = compose()["services"]["config-service"]
    published = [str(p) for p in service["ports"]]
    assert published == ["127.0.0.1:7443-7444:7443"]
    assert service["deploy"]["replicas"] == 2  # one host port per replica in the range


def test_provider_base_urls_from_env_reach_the_config_service() -> None:
    """AIBRIDGE_OPENAI_BASE_URL and AIBRIDGE_ANTHROPIC_BASE_URL are passed through from .env."""
    env = compose()["services"]["config-service"]["environment"]
    for name in ("AIBRIDGE_OPENAI_BASE_URL", "AIBRIDGE_ANTHROPIC_BASE_URL"):
        assert env[name] == f"${{{name}:-}}"


def test_dockerignore_keeps_the_env_file_and_the_password_file_out_of_the_image() -> None:
    """The build context excludes .env (and variants) and compose.postgres-password, not .env.example."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def excluded(name: str) -> bool:
        # Docker's rule: the last matching pattern wins; `!` re-includes.
        verdict = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            if fnmatch.fnmatch(name, pattern.removeprefix("!")):
                verdict = not negated
        return verdict

    for name in (".env", ".env.local", "compose.postgres-password"):
        assert excluded(name), name
    assert not excluded(".env.example")
    assert not excluded("pyproject.toml")
