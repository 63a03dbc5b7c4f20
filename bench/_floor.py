"""C tools as the load around the bridge: nginx as a static upstream, wrk as the client.

A Python client and upstream cost ≈ 30-70 µs of CPU per request each, which on a 2-core
machine takes a third of a core away from what is being measured. `nginx` (Debian's
package) answering a fixed completion from memory and `wrk` (Debian's package) driving
keep-alive connections cost a few µs per request, so nearly both cores are left for the
bridge's workers. Both are optional: `available()` names what is missing.

The processes are started in a temp directory (config, pid and log files there) and are
always reaped by the caller's `stop()`; CPU of each is read from its rusage at exit.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from _stack import _completion, free_port

_PATH = f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/bin"  # nginx lives in sbin
NGINX = shutil.which("nginx", path=_PATH)
WRK = shutil.which("wrk", path=_PATH)


def available() -> str | None:
    """None when both tools are installed, else what is missing (and how to get it)."""
    missing = [n for n, path in (("nginx", NGINX), ("wrk", WRK)) if path is None]
    return (
        f"{' and '.join(missing)} not installed (apt-get install {' '.join(missing)})"
        if missing
        else None
    )


def _cpu_of_exited(pid: int) -> float:
    """Wait for child `pid` and return its user + system CPU seconds."""
    _, _, usage = os.wait4(pid, 0)
    return usage.ru_utime + usage.ru_stime


class NginxUpstream:
    """nginx, one worker, answering every request with the bench's JSON completion."""

    def __init__(self, tmp: Path) -> None:
        assert NGINX is not None, available()
        self.dir = tmp / "nginx-upstream"
        self.dir.mkdir(parents=True)
        self.port = free_port()
        body = _completion().decode().replace("\\", "\\\\").replace("'", "\\'")
        (self.dir / "nginx.conf").write_text(
            f"""
worker_processes 1;
daemon off;
master_process off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {self.dir};
  proxy_temp_path {self.dir};
  fastcgi_temp_path {self.dir};
  uwsgi_temp_path {self.dir};
  scgi_temp_path {self.dir};
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{self.port} reuseport backlog=4096;
    location / {{
      client_body_buffer_size 64k;
      default_type application/json;
      return 200 '{body}';
    }}
  }}
}}
"""
        )
        # master_process off: the one process answers and is the pid we measure.
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nginx not listening on {port} after {timeout}s")


@dataclass
class WrkRun:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    client_cpu: float


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if m is None:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(
    url: str, headers: dict[str, str], body: bytes, connections: int, seconds: float, tmp: Path
) -> WrkRun:
    """wrk (one thread) POSTing `body` to `url` over `connections` keep-alive connections."""
    assert WRK is not None, available()
    script = tmp / "wrk-post.lua"
    lua_headers = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    body_literal = body.decode().replace("\\", "\\\\").replace('"', '\\"')
    script.write_text(f'wrk.method = "POST"\nwrk.body = "{body_literal}"\n{lua_headers}')
    proc = subprocess.Popen(
        [
            WRK,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    cpu = _cpu_of_exited(proc.pid)
    proc.returncode = 0  # reaped by wait4 above
    total = re.search(r"(\d+) requests in ([\d.]+)(s|m)", out)
    if total is None:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    elapsed = float(total.group(2)) * (60 if total.group(3) == "m" else 1)
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    return WrkRun(int(total.group(1)), elapsed, errors, _ms(lat["50"]), _ms(lat["99"]), cpu)


__all__ = ["NginxUpstream", "WrkRun", "available", "run_wrk"]
