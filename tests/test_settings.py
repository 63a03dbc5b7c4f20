"""Settings are declared once (`aibridge.envconfig.Setting`): the reference documents every
one, the packages read no variable behind the loader's back, and the loader reads the
mapping it is given (never the process environment)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from aibridge.client import CLIENT
from aibridge.commands.up import SETTINGS as UP
from aibridge.envconfig import Schema, SettingsError
from config_service.settings import SETTINGS as CONFIG_SERVICE
from config_service.settings import ConfigServiceSettings
from data_plane.bridge.settings import SETTINGS as BRIDGE
from data_plane.bridge.settings import BridgeSettings
from data_plane.proxy.settings import SETTINGS as PROXY
from data_plane.proxy.settings import ProxySettings

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("aibridge", "config_service", "data_plane", "console")
SCHEMAS: dict[str, Schema] = {
    "config-service": CONFIG_SERVICE,
    "bridge": BRIDGE,
    "proxy": PROXY,
    "client": CLIENT,
    "up": UP,
}
BRIDGE_TOKEN = {"AIBRIDGE_BRIDGE_TOKEN": "test-bridge-token-0123456789abcdef"}
# The one variable read by a name given at run time: `providers keys add --from-env VAR`.
RUNTIME_NAMED = {("aibridge/commands/providers.py", "_env_secret")}


def test_every_declared_setting_is_in_the_configuration_reference() -> None:
    """docs/configuration.md has a row for each declared setting, with its flag."""
    reference = (ROOT / "docs" / "configuration.md").read_text()
    for schema in SCHEMAS.values():
        for setting in schema.settings:
            flag = f"`{setting.flag}`" if setting.flag else "(none)"
            assert f"| `{setting.env}` | {flag} |" in reference, setting.env


def test_every_default_parses() -> None:
    """Each declared default is a valid value: a bad value falls back to it."""
    for schema in SCHEMAS.values():
        for setting in schema.settings:
            setting.parse(setting.default)


def test_no_flag_is_declared_twice_in_one_command() -> None:
    """Within one command, every variable (so every flag) is declared once."""
    for name, schema in SCHEMAS.items():
        envs = [s.env for s in schema.settings]
        assert len(envs) == len(set(envs)), name


def _is_os_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def _reads_one_variable(node: ast.AST) -> bool:
    """`os.environ[...]`, `os.environ.get(...)` or `getenv(...)`: one variable read
    rather than the whole mapping handed on."""
    if isinstance(node, ast.Subscript):
        return _is_os_environ(node.value)
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr == "getenv" or (func.attr == "get" and _is_os_environ(func.value))
    return isinstance(func, ast.Name) and func.id == "getenv"


def _environment_reads(tree: ast.Module) -> dict[int, str]:
    """line -> innermost enclosing function of each read of one process variable."""
    reads: dict[int, str] = {}
    for scope in ast.walk(tree):  # outer scopes first: an inner function overwrites
        if isinstance(scope, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef):
            name = getattr(scope, "name", "<module>")
            reads |= {
                n.lineno: name
                for n in ast.walk(scope)
                if isinstance(n, ast.expr) and _reads_one_variable(n)
            }
    return reads


def test_no_setting_is_read_behind_the_loader() -> None:
    """The packages read no variable from os.environ themselves (AWS_REGION and
    XDG_DATA_HOME were): os.environ is only handed on whole, to a loader or a child."""
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            relative = str(path.relative_to(ROOT))
            for line, function in _environment_reads(ast.parse(path.read_text())).items():
                if (relative, function) not in RUNTIME_NAMED:
                    found.add(f"{relative}:{line} ({function})")
    assert not found, sorted(found)


def test_data_dir_follows_xdg_data_home_from_the_mapping(tmp_path: Path) -> None:
    """XDG_DATA_HOME is read from the settings' mapping like any setting."""
    settings = ConfigServiceSettings.from_env({"XDG_DATA_HOME": str(tmp_path)})
    assert settings.data_dir == tmp_path / "aibridge"
    proxy = ProxySettings.from_env(
        {"AIBRIDGE_PROXY_TOKEN": "t", "XDG_DATA_HOME": str(tmp_path / "x")}
    )
    assert proxy.ca_paths[0] == tmp_path / "x" / "aibridge" / "proxy-ca.pem"


def test_bedrock_fallback_region_is_a_bridge_setting() -> None:
    """AWS_REGION (else AWS_DEFAULT_REGION) from the bridge's mapping is Bedrock's fallback."""
    default_only = BridgeSettings.from_env({**BRIDGE_TOKEN, "AWS_DEFAULT_REGION": "ap-south-1"})
    assert default_only.aws_region == "ap-south-1"
    both = {**BRIDGE_TOKEN, "AWS_DEFAULT_REGION": "ap-south-1", "AWS_REGION": "eu-west-3"}
    assert BridgeSettings.from_env(both).aws_region == "eu-west-3"


def test_a_bad_secret_is_named_without_its_value() -> None:
    """A malformed secret (a database URL with a password) is reported without the value."""
    with pytest.raises(SettingsError) as info:
        ConfigServiceSettings.from_env({"AIBRIDGE_DATABASE_URL": "mysql://u:hunter2@db/x"})
    [problem] = info.value.problems
    assert problem.startswith("AIBRIDGE_DATABASE_URL: expected sqlite")
    assert "hunter2" not in problem


def test_every_bad_value_is_reported_at_once_flags_winning() -> None:
    """Bad values from the environment and from flags are all listed; a flag replaces the
    environment's value (so a good flag hides a bad variable)."""
    env = {
        **BRIDGE_TOKEN,
        "AIBRIDGE_BRIDGE_LISTEN": "nowhere",
        "AIBRIDGE_CIRCUIT_BREAKER_MAX_REQUESTS": "many",
    }
    flags = {"AIBRIDGE_BRIDGE_LISTEN": "127.0.0.1:0", "AIBRIDGE_BRIDGE_HEADER_TIMEOUT": "0s"}
    with pytest.raises(SettingsError) as info:
        BridgeSettings.from_env(env, flags)
    assert info.value.problems == [
        "AIBRIDGE_BRIDGE_HEADER_TIMEOUT='0s': must be more than 0",
        "AIBRIDGE_CIRCUIT_BREAKER_MAX_REQUESTS='many': expected a whole number",
    ]
