"""Proxy settings from the environment and flags, every problem reported at once."""

from __future__ import annotations

import ipaddress
import resource
from pathlib import Path

import pytest

from data_plane.proxy.cli import main
from data_plane.proxy.settings import ProxySettings
from tests.fixtures.settings import refusal


def test_defaults(tmp_path: Path) -> None:
    """Only the token is required; the rest has the documented defaults."""
    s = ProxySettings.from_env({"AIBRIDGE_PROXY_TOKEN": "t", "AIBRIDGE_DATA_DIR": str(tmp_path)})
    assert (s.listen_host, s.listen_port) == ("127.0.0.1", 8888)
    assert s.bridge_url == "http://127.0.0.1:8080"
    assert s.allowed_ports == {80, 443}
    assert s.allowed_private_cidrs == ()
    assert s.ca_paths == (tmp_path / "proxy-ca.pem", tmp_path / "proxy-ca-key.pem")
    assert s.proxy_token.value == "t"


def test_connection_limits_default_to_the_fd_limit_and_can_be_set() -> None:
    """The connection cap defaults to (RLIMIT_NOFILE - 128) / 2; limits and timeouts are settable."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    s = ProxySettings.from_env({"AIBRIDGE_PROXY_TOKEN": "t"})
    assert s.max_connections == (soft - 128) // 2
    assert (s.idle_timeout, s.header_timeout, s.max_header_bytes) == (60.0, 10.0, 65536)
    s = ProxySettings.from_env(
        {
            "AIBRIDGE_PROXY_TOKEN": "t",
            "AIBRIDGE_PROXY_MAX_CONNECTIONS": "100",
            "AIBRIDGE_PROXY_IDLE_TIMEOUT": "2m",
            "AIBRIDGE_PROXY_HEADER_TIMEOUT": "500ms",
            "AIBRIDGE_PROXY_MAX_HEADER_BYTES": "8192",
        }
    )
    assert (s.max_connections, s.idle_timeout, s.header_timeout) == (100, 120.0, 0.5)
    assert s.max_header_bytes == 8192


def test_bad_connection_limits_are_reported() -> None:
    """A zero cap, a non-positive timeout and a tiny header cap are each named."""
    limits = {"AIBRIDGE_PROXY_MAX_CONNECTIONS": "0", "AIBRIDGE_PROXY_IDLE_TIMEOUT": "0s"}
    limits |= {"AIBRIDGE_PROXY_HEADER_TIMEOUT": "soon", "AIBRIDGE_PROXY_MAX_HEADER_BYTES": "10"}
    refusal(ProxySettings.from_env, {"AIBRIDGE_PROXY_TOKEN": "t", **limits}, *limits)


def test_values_and_flags_win() -> None:
    """Environment values are parsed; a flag overrides the environment."""
    s = ProxySettings.from_env(
        {
            "AIBRIDGE_PROXY_TOKEN": "t",
            "AIBRIDGE_PROXY_ALLOWED_PORTS": "443, 8443",
            "AIBRIDGE_PROXY_ALLOWED_PRIVATE_CIDRS": "10.0.0.0/8,fd00::/8",
            "AIBRIDGE_PROXY_BRIDGE_URL": "http://bridge:8080/",
        },
        {"AIBRIDGE_PROXY_LISTEN": "[::1]:0"},
    )
    assert s.allowed_ports == {443, 8443}
    assert s.allowed_private_cidrs == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert s.bridge_url == "http://bridge:8080"
    assert (s.listen_host, s.listen_port) == ("::1", 0)


def test_every_problem_at_once() -> None:
    """Several bad values are all listed in one error."""
    env = {"AIBRIDGE_PROXY_LISTEN": "nope", "AIBRIDGE_PROXY_ALLOWED_PORTS": "443,http"}
    env |= {"AIBRIDGE_PROXY_ALLOWED_PRIVATE_CIDRS": "10.0.0.0/33"}
    env |= {"AIBRIDGE_PROXY_BRIDGE_URL": "ftp://x", "AIBRIDGE_PROXY_CA_CERT_FILE": "/tmp/ca.pem"}
    error = refusal(
        ProxySettings.from_env,
        env,
        "AIBRIDGE_PROXY_TOKEN",
        "AIBRIDGE_PROXY_LISTEN",
        "'http'",
        "10.0.0.0/33",
        "ftp://x",
        "set together",
    )
    assert len(error.problems) == 6


def test_cli_reports_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`aibridge proxy` with bad settings exits 2 naming the problem."""
    monkeypatch.delenv("AIBRIDGE_PROXY_TOKEN", raising=False)
    assert main(["--proxy-allowed-ports", "x"], prog="aibridge proxy") == 2
    err = capsys.readouterr().err
    assert "AIBRIDGE_PROXY_TOKEN" in err and "'x'" in err
