"""`aibridge console` as a process: settings problems and a taken port exit 2 with one clear
message, TLS serves Secure cookies, and nothing secret reaches its log."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
from pathlib import Path

import httpx

from tests.console.conftest import csrf_of
from tests.fixtures import processes
from tests.fixtures.certs import make_pki
from tests.fixtures.services import ADMIN_TOKEN, Procs


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [processes.AIBRIDGE, "console"],
        env=processes.clean_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_settings_are_all_named_and_exit_2(tmp_path: Path) -> None:
    """A bad listen address, a bad TTL and a certificate without its key are reported together."""
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    done = _run(
        {
            "AIBRIDGE_CONSOLE_LISTEN": "nowhere",
            "AIBRIDGE_CONSOLE_SESSION_TTL": "0s",
            "AIBRIDGE_CONSOLE_TLS_CERT_FILE": str(cert),
        }
    )
    assert done.returncode == 2
    assert "AIBRIDGE_CONSOLE_LISTEN='nowhere': expected host:port" in done.stderr
    assert "AIBRIDGE_CONSOLE_SESSION_TTL='0s': must be more than 0" in done.stderr
    assert "must be set together" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_taken_port_is_named_with_its_setting() -> None:
    """The console's port in use: one line naming the address and AIBRIDGE_CONSOLE_LISTEN, exit 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run({"AIBRIDGE_CONSOLE_LISTEN": f"127.0.0.1:{port}"})
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"aibridge console: cannot listen on 127.0.0.1:{port} (AIBRIDGE_CONSOLE_LISTEN): address "
        "already in use; stop what uses it or set AIBRIDGE_CONSOLE_LISTEN to another host:port"
    )


def test_over_tls_the_session_cookie_is_secure_and_the_log_holds_no_token(
    procs: Procs, database_url: str, tmp_path: Path
) -> None:
    """Served with a certificate, sign-in answers over HTTPS with a Secure cookie and HSTS; the
    console's log names the principal, never the token."""
    pki = make_pki(tmp_path / "pki")
    cs = procs.config_service(database_url)
    console = procs.start(
        "console",
        ["console"],
        {
            "AIBRIDGE_CONFIG_SERVICE": cs.target,
            "AIBRIDGE_CONSOLE_LISTEN": "127.0.0.1:0",
            "AIBRIDGE_CONSOLE_TLS_CERT_FILE": str(pki.server_cert),
            "AIBRIDGE_CONSOLE_TLS_KEY_FILE": str(pki.server_key),
            "AIBRIDGE_LOG_FORMAT": "json",
        },
        "console listening",
    )
    url = console.ready["url"]
    assert url.startswith("https://127.0.0.1:")
    trust = ssl.create_default_context(cafile=str(pki.ca_cert))
    with httpx.Client(base_url=url, verify=trust) as client:
        form = client.get("/signin")
        answer = client.post("/signin", data={"csrf": csrf_of(form.text), "token": ADMIN_TOKEN})
    assert answer.status_code == 303
    cookies = answer.headers.get_list("set-cookie")
    assert cookies and all(re.search(r";\s*Secure", c) for c in cookies)
    assert answer.headers["strict-transport-security"].startswith("max-age=")
    signed_in = console.wait_for_log("console sign-in")
    assert signed_in["principal"] and signed_in["role"] == "owner"
    assert ADMIN_TOKEN not in "".join(console.lines)
    assert not console.events("console served over plain HTTP on a non-loopback address")
