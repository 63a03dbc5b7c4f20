"""`aibridge up` as a new user runs it: one command, three daemons, printed settings that work."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.fakes import ThreadServer, Upstream
from tests.fixtures.services import AIBRIDGE

UPSTREAM_KEY = "sk-up-upstream-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Up:
    popen: subprocess.Popen[str]
    exports: dict[str, str] = field(default_factory=dict)
    stderr: list[str] = field(default_factory=list)

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
    server = ThreadServer(app).start()
    yield app, server.port
    server.stop()


def start_up(data_dir: Path, upstream_port: int) -> Up:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIBRIDGE_", "CODER_"))}
    env.update(
        {
            "AIBRIDGE_DATA_DIR": str(data_dir),
            "AIBRIDGE_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
            "AIBRIDGE_BRIDGE_LISTEN": f"127.0.0.1:{free_port()}",
            "AIBRIDGE_PROXY_LISTEN": f"127.0.0.1:{free_port()}",
            "AIBRIDGE_PROVIDER_0_TYPE": "openai",
            "AIBRIDGE_PROVIDER_0_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1/",
            "AIBRIDGE_PROVIDER_0_KEY": UPSTREAM_KEY,
        }
    )
    popen = subprocess.Popen(
        [AIBRIDGE, "up"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    up = Up(popen)
    assert popen.stderr is not None and popen.stdout is not None

    def drain() -> None:
        assert popen.stderr is not None
        for line in popen.stderr:
            up.stderr.append(line)

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 60
    for line in popen.stdout:
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


def test_up_runs_the_stack_and_its_printed_settings_work(
    upstream: tuple[Upstream, int], tmp_path: Path
) -> None:
    """The printed OPENAI_* settings stream a completion through the bridge; Ctrl-C stops all three cleanly."""
    app, port = upstream
    up = start_up(tmp_path / "data", port)
    try:
        assert set(up.children()) == {"config-service", "bridge", "proxy"}
        client = openai.OpenAI(
            base_url=up.exports["OPENAI_BASE_URL"],
            api_key=up.exports["OPENAI_API_KEY"],
            max_retries=0,
        )
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert (
            "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            == "Hello from upstream"
        )
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
    finally:
        stop(up)


def test_a_dead_child_stops_the_others_and_names_itself_in_the_exit_code(
    upstream: tuple[Upstream, int], tmp_path: Path
) -> None:
    """When the bridge dies, up stops config service and proxy and exits with code 12."""
    _, port = upstream
    up = start_up(tmp_path / "data", port)
    try:
        children = up.children()
        os.kill(children["bridge"], signal.SIGKILL)
        assert up.popen.wait(30) == 12
        time.sleep(0.2)
        for name in ("config-service", "proxy"):
            stat = Path(f"/proc/{children[name]}/stat")
            assert not stat.exists() or stat.read_text().split()[2] == "Z"
    finally:
        stop(up)


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
    second = start_up(tmp_path / "data", port)
    try:
        assert second.exports["OPENAI_API_KEY"] == token
        assert (tmp_path / "data" / "dev-secrets.env").read_text() == secrets_before
    finally:
        second.popen.send_signal(signal.SIGINT)
        second.popen.wait(30)
        stop(second)
