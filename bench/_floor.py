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

import asyncio
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from _stack import _completion, free_port, http_get, terminate

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


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
{http}}}
"""


class Nginx:
    """nginx in the foreground, one worker, on a config generated in `tmp` (`http`: the
    http block's own part, formatted with tmp, port and `fields`); ready on return;
    master and worker pids in `pids`."""

    def __init__(self, binary: str, tmp: Path, http: str, **fields: object) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = tmp / "nginx.conf"
        block = http.format(tmp=tmp, port=self.port, **fields)
        conf.write_text(NGINX_CONF.format(tmp=tmp, http=block))
        self.popen = subprocess.Popen(
            [binary, "-p", str(tmp), "-e", str(tmp / "nginx-error.log"), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.pids = {"nginx": self.popen.pid}
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def worker(self) -> int:
        """The worker's pid: the process that answers (the master only supervises)."""
        return next(pid for name, pid in self.pids.items() if name != "nginx")

    def _wait_ready(self, timeout: float = 20) -> None:
        """Until nginx answers (any status) and its worker is known."""

        async def poll() -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"nginx exited {self.popen.returncode}")
                try:
                    await http_get("127.0.0.1", self.port, "/")
                    if self._worker():
                        return
                except (TimeoutError, OSError):
                    pass
                await asyncio.sleep(0.01)
            raise RuntimeError(f"nginx not answering on {self.port} after {timeout}s")

        asyncio.run(poll())

    def _worker(self) -> bool:
        pid = self.popen.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for i, child in enumerate(children):
            self.pids[f"nginx-worker-{i}"] = int(child)
        return bool(children)

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown: the master stops its workers), then SIGKILL for
        any of them still running after 10 s."""
        terminate(self.popen)
        for name, pid in self.pids.items():
            if name != "nginx" and Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)


# nginx as the fake upstream: every request answered with the bench's JSON completion.
STATIC_COMPLETION = """\
    access_log off;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
"""


class NginxUpstream:
    """The bench upstream's JSON answers from nginx (the `_stack.Upstream` shape)."""

    def __init__(self, tmp: Path) -> None:
        assert NGINX is not None, available()
        body = _completion().decode().replace("\\", "\\\\").replace("'", "\\'")
        self.nginx = Nginx(NGINX, tmp / "nginx-upstream", STATIC_COMPLETION, body=body)
        self.port = self.nginx.port
        self.pid = self.nginx.worker

    def stop(self) -> None:
        self.nginx.stop()


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


__all__ = ["Nginx", "NginxUpstream", "WrkRun", "available", "run_wrk"]
