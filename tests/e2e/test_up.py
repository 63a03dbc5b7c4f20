"""`aibridge up` as a new user runs it: one command, three daemons, printed settings that work."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import openai
import pytest

from tests.e2e.fakes import Upstream
from tests.fixtures.processes import AIBRIDGE
from tests.fixtures.upstream import ThreadedUpstream
from tests.fixtures.waits import eventually

UPSTREAM_KEY = "sk-up-upstream-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-up-upstream-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Up:
    popen: subprocess.Popen[str]
    env: dict[str, str]
    exports: dict[str, str] = field(default_factory=dict)
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    stderr_closed: threading.Event = field(default_factory=threading.Event)
    upstream: Upstream | None = None  # the fake provider behind it, when a test keeps one

    def children(self) -> dict[str, int]:
        """pid of each child daemon, by sub-command, from /proc."""
        found: dict[str, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.popen.pid and len(cmdline) > 3:
                found[cmdline[3].decode()] = int(entry.name)
        return found


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, int]]:
    app = Upstream()
    server = ThreadedUpstream(app).start()
    yield app, server.port
    server.stop()


def up_env(data_dir: Path, upstream_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIBRIDGE_", "CODER_"))}
    env.update(
        {
            "AIBRIDGE_DATA_DIR": str(data_dir),
            "AIBRIDGE_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
            "AIBRIDGE_BRIDGE_LISTEN": f"127.0.0.1:{free_port()}",
            "AIBRIDGE_PROXY_LISTEN": f"127.0.0.1:{free_port()}",
            "AIBRIDGE_CONSOLE_LISTEN": f"127.0.0.1:{free_port()}",
            "AIBRIDGE_PROVIDER_0_TYPE": "openai",
            "AIBRIDGE_PROVIDER_0_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1/",
            "AIBRIDGE_PROVIDER_0_KEY": UPSTREAM_KEY,
            "AIBRIDGE_PROVIDER_1_TYPE": "anthropic",
            "AIBRIDGE_PROVIDER_1_BASE_URL": f"http://127.0.0.1:{upstream_port}/",
            "AIBRIDGE_PROVIDER_1_KEY": ANTHROPIC_KEY,
        }
    )
    return env


def launch(env: dict[str, str]) -> Up:
    popen = subprocess.Popen(
        [AIBRIDGE, "up"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return Up(popen, env)


def start_up(data_dir: Path, upstream_port: int) -> Up:
    up = launch(up_env(data_dir, upstream_port))
    popen = up.popen
    assert popen.stderr is not None and popen.stdout is not None

    def drain() -> None:
        assert popen.stderr is not None
        for line in popen.stderr:
            up.stderr.append(line)
        up.stderr_closed.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 60
    for line in popen.stdout:
        up.stdout.append(line)
        match = re.match(r"export (\w+)=(\S+)", line)
        if match:
            up.exports[match[1]] = match[2]
        if "Ctrl-C stops everything" in line:
            return up
        assert time.monotonic() < deadline
    popen.wait(10)
    raise AssertionError("aibridge up never became ready:\n" + "".join(up.stderr))


def stop(up: Up) -> None:
    if up.popen.poll() is None:
        up.popen.kill()
        up.popen.wait(10)
    for pid in up.children().values():
        os.kill(pid, signal.SIGKILL)
    up.stderr_closed.wait(10)  # the reader thread got to the end of stderr
    for pipe in (up.popen.stdout, up.popen.stderr):
        if pipe is not None:
            pipe.close()


@pytest.fixture
def up(upstream: tuple[Upstream, int], tmp_path: Path) -> Iterator[Up]:
    """`aibridge up` on this test's data dir and the fake upstream, stopped at the end."""
    started = start_up(tmp_path / "data", upstream[1])
    yield started
    stop(started)


def test_up_runs_the_stack_and_its_printed_settings_work(
    upstream: tuple[Upstream, int], up: Up, tmp_path: Path
) -> None:
    """The printed OPENAI_* settings stream a completion through the bridge, the printed console URL answers; Ctrl-C stops all four, no traceback."""
    app, _ = upstream
    assert set(up.children()) == {"config-service", "bridge", "proxy", "console"}
    console_url = f"http://{up.env['AIBRIDGE_CONSOLE_LISTEN']}"
    assert any(f"Web console: {console_url}" in line for line in up.stdout)
    assert httpx.get(f"{console_url}/signin", timeout=5).status_code == 200
    with (
        openai.OpenAI(
            base_url=up.exports["OPENAI_BASE_URL"],
            api_key=up.exports["OPENAI_API_KEY"],
            max_retries=0,
        ) as client,
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        ) as stream,
    ):
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from upstream"
    assert {s.headers["authorization"] for s in app.seen} == {f"Bearer {UPSTREAM_KEY}"}
    ca = Path(up.exports["SSL_CERT_FILE"])
    assert ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
    secrets_file = tmp_path / "data" / "dev-secrets.env"
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    children = up.children()
    up.popen.send_signal(signal.SIGINT)
    assert up.popen.wait(30) == 0
    for pid in children.values():
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        )
    with pytest.raises(httpx.HTTPError):
        httpx.get(up.exports["OPENAI_BASE_URL"], timeout=1)
    # The children's shutdown logs no traceback (grpc's cancelled RPC tasks were one).
    assert up.stderr_closed.wait(10)
    assert not [line for line in up.stderr if "Traceback" in line or "CancelledError" in line]


def test_a_dead_child_stops_the_others_and_names_itself_in_the_exit_code(up: Up) -> None:
    """When the bridge dies, up stops config service and proxy and exits with code 12."""
    children = up.children()
    os.kill(children["bridge"], signal.SIGKILL)
    assert up.popen.wait(30) == 12

    def gone(name: str) -> bool:
        stat = Path(f"/proc/{children[name]}/stat")
        return not stat.exists() or stat.read_text().split()[2] == "Z"

    asyncio.run(eventually(lambda: gone("config-service") and gone("proxy"), 5))


def test_second_run_reuses_the_generated_secrets(
    upstream: tuple[Upstream, int], tmp_path: Path
) -> None:
    """Restarting up on the same data dir keeps the gateway token and generated keys."""
    _, port = upstream
    first = start_up(tmp_path / "data", port)
    token = first.exports["OPENAI_API_KEY"]
    secrets_before = (tmp_path / "data" / "dev-secrets.env").read_text()
    first.popen.send_signal(signal.SIGINT)
    assert first.popen.wait(30) == 0
    stop(first)
    second = start_up(tmp_path / "data", port)
    try:
        assert second.exports["OPENAI_API_KEY"] == token
        assert (tmp_path / "data" / "dev-secrets.env").read_text() == secrets_before
    finally:
        second.popen.send_signal(signal.SIGINT)
        second.popen.wait(30)
        stop(second)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """One running `aibridge up`, for the tests that read what it printed or probe its ports."""
    app = Upstream()
    server = ThreadedUpstream(app).start()
    up = start_up(tmp_path_factory.mktemp("stack") / "data", server.port)
    up.upstream = app
    yield up
    up.popen.send_signal(signal.SIGINT)
    up.popen.wait(30)
    stop(up)
    server.stop()


def printed_block(up: Up, first: str) -> str:
    """The printed lines from the one starting with `first` up to the next blank line."""
    start = next(i for i, line in enumerate(up.stdout) if line.startswith(first))
    end = next(i for i in range(start, len(up.stdout)) if not up.stdout[i].strip())
    return "".join(up.stdout[start:end])


def pasted_exports(up: Up) -> dict[str, str]:
    """The environment bash ends up with after running the printed `export` lines."""
    script = "".join(line for line in up.stdout if line.startswith("export ")) + "env -0\n"
    result = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return dict(item.split("=", 1) for item in result.stdout.split("\0") if "=" in item)


def test_printed_codex_block_is_the_toml_codex_reads(stack: Up) -> None:
    """The Codex lines parse as TOML selecting a [model_providers.aibridge] at the printed base URL."""
    config = tomllib.loads(printed_block(stack, "# Codex"))
    assert config == {
        "model_provider": "aibridge",
        "model_providers": {
            "aibridge": {
                "name": "AI Bridge",
                "base_url": stack.exports["OPENAI_BASE_URL"],
                "wire_api": "responses",
                "env_key": "OPENAI_API_KEY",
            }
        },
    }


def test_pasted_exports_trust_the_system_roots_and_the_proxy_ca(stack: Up) -> None:
    """Pasted into bash, SSL_CERT_FILE and REQUESTS_CA_BUNDLE hold every system root plus the proxy CA."""
    env = pasted_exports(stack)
    proxy_ca = Path(env["NODE_EXTRA_CA_CERTS"]).read_text()
    assert proxy_ca.startswith("-----BEGIN CERTIFICATE-----")
    assert env["REQUESTS_CA_BUNDLE"] == env["SSL_CERT_FILE"]
    assert proxy_ca in Path(env["SSL_CERT_FILE"]).read_text()

    def roots(cafile: str) -> int:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=cafile)
        return len(context.get_ca_certs())

    system = ssl.get_default_verify_paths().openssl_cafile
    assert roots(env["SSL_CERT_FILE"]) == roots(system) + 1 > 2
    assert env["HTTPS_PROXY"].endswith("@" + stack.env["AIBRIDGE_PROXY_LISTEN"])
    assert "# Node's built-in fetch ignores HTTPS_PROXY" in "".join(stack.stdout)


def test_a_second_up_on_the_same_ports_names_each_busy_port_and_starts_nothing(
    stack: Up,
) -> None:
    """A second `up` with the first one's settings exits 2 with one line per taken port and its setting."""
    secrets_before = (Path(stack.env["AIBRIDGE_DATA_DIR"]) / "dev-secrets.env").read_text()
    second = subprocess.run(
        [AIBRIDGE, "up"],
        env=stack.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 2, second.stderr
    assert second.stdout == ""
    lines = second.stderr.splitlines()
    settings = (
        "AIBRIDGE_GRPC_LISTEN",
        "AIBRIDGE_BRIDGE_LISTEN",
        "AIBRIDGE_PROXY_LISTEN",
        "AIBRIDGE_CONSOLE_LISTEN",
    )
    assert lines == [
        f"aibridge up: cannot listen on {stack.env[s]} ({s}): address already in use; "
        f"stop what uses it or set {s} to another host:port"
        for s in settings
    ]
    assert stack.popen.poll() is None
    assert set(stack.children()) == {"config-service", "bridge", "proxy", "console"}
    assert (Path(stack.env["AIBRIDGE_DATA_DIR"]) / "dev-secrets.env").read_text() == secrets_before


def test_readiness_is_proved_by_this_runs_own_replica_and_daemons(stack: Up) -> None:
    """up's final readiness check holds for its own run's replica and daemons, not for another run's."""
    from aibridge.commands.up import own_stack
    from aibridge.config.v1 import config_service_pb2 as cs
    from aibridge.config.v1 import config_service_pb2_grpc as cs_grpc

    target = stack.env["AIBRIDGE_GRPC_LISTEN"]
    secrets_file = Path(stack.env["AIBRIDGE_DATA_DIR"]) / "dev-secrets.env"
    admin = next(
        line.split("=", 1)[1]
        for line in secrets_file.read_text().splitlines()
        if line.startswith("AIBRIDGE_ADMIN_TOKEN=")
    )
    with grpc.insecure_channel(target) as channel:
        listed = cs_grpc.ConfigServiceStub(channel).ListSubscribers(
            cs.ListSubscribersRequest(), metadata=(("authorization", f"Bearer {admin}"),)
        )
    (replica,) = {s.replica_id for s in listed.subscribers}
    assert replica.startswith(f"up-{stack.popen.pid}-")
    nodes = {s.node_id for s in listed.subscribers}
    assert nodes == {f"{replica}-bridge", f"{replica}-proxy"}
    assert own_stack(target, admin, replica, nodes)
    assert not own_stack(target, admin, f"up-{os.getpid()}-00000000", nodes)
    assert not own_stack(target, admin, replica, {f"{replica}-bridge", "someone-else-proxy"})


def python_snippet(doc: str) -> str:
    """The one Python block of docs/clients/<doc>, exactly as the page shows it."""
    (code,) = re.findall(
        r"```python\n(.*?)```", (ROOT / "docs" / "clients" / doc).read_text(), re.S
    )
    return str(code)


@pytest.mark.parametrize(
    ("doc", "provider", "paths"),
    [
        ("openai-sdk.md", "openai", {"/v1/chat/completions", "/v1/responses"}),
        ("anthropic-sdk.md", "anthropic", {"/v1/messages"}),
    ],
)
def test_client_doc_snippets_run_as_written_against_the_printed_settings(
    stack: Up, doc: str, provider: str, paths: set[str]
) -> None:
    """The page's Python block runs with only its placeholders filled in, and reaches the upstream with the pooled key."""
    assert stack.upstream is not None
    bridge = stack.exports["OPENAI_BASE_URL"].removesuffix("/openai/v1")
    token = stack.exports["OPENAI_API_KEY"]
    code = python_snippet(doc)
    for placeholder, value in (
        ("http://127.0.0.1:8080", bridge),
        ("<provider>", provider),
        ("<your gateway token>", token),
        ("<gateway token>", token),
    ):
        code = code.replace(placeholder, value)
    assert "<" not in code, code
    before = len(stack.upstream.seen)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = stack.upstream.seen[before:]
    assert {s.path for s in seen} == paths
    key = UPSTREAM_KEY if provider == "openai" else ANTHROPIC_KEY
    assert all(
        key in (s.headers.get("authorization", "") + s.headers.get("x-api-key", "")) for s in seen
    )
