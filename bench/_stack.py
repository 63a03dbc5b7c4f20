"""Pieces the bridge benchmarks share: a fast fake upstream, a lean HTTP/1.1 client,
and helpers that run the real daemons (`aibridge config-service`, `bridge`, `proxy`) with the
test suite's launcher, tests/fixtures/processes.py.

The fake upstream and the client are raw asyncio protocols over `httptools` (already
installed with uvicorn[standard]) on uvloop, so that on a small machine as little CPU
as possible goes to anything but the bridge being measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

import httptools

# The daemons are run by the suite's one launcher (standard library only).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.fixtures.processes import AIBRIDGE as AIBRIDGE
from tests.fixtures.processes import Proc as Proc
from tests.fixtures.processes import clean_env as clean_env
from tests.fixtures.processes import start as start
from tests.fixtures.processes import terminate as terminate

# Bench-only bootstrap tokens, random enough for the config service's strength rule; fixed, so
# that the benchmark's child processes (multiprocessing "spawn") share them.
ADMIN = "aib_bench_xWf2kg1YzfZc6NLmlMISZ_rq3PEClDv0dzhLpCM38DM"
BRIDGE = "aib_bench_WV8kK5Ehc7z9l6Vg0c8j9fxSVhWJJBxx_8R6VDcdDwM"
PROXY = "aib_bench_E_PA11G3IRgGmiWlddH7mwcJIlO0QdMlia7UQFS2YZo"
UPSTREAM_KEY = "sk-bench-upstream-0123456789abcdef"
PROVIDER = "fake"
SSE_CHUNKS = 20

# --- the fake upstream -------------------------------------------------------------


def _completion() -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench0123456789",
            "object": "chat.completion",
            "created": 1735689600,
            "model": "gpt-bench",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Hello! This is a canned answer from the benchmark upstream, "
                        "long enough to look like a short real reply to a short question.",
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 42, "completion_tokens": 24, "total_tokens": 66},
        },
        separators=(",", ":"),
    ).encode()


def _sse_events(chunks: int) -> list[bytes]:
    events = []
    for i in range(chunks - 1):
        doc = {
            "id": "chatcmpl-bench0123456789",
            "object": "chat.completion.chunk",
            "created": 1735689600,
            "model": "gpt-bench",
            "choices": [{"index": 0, "delta": {"content": f"token{i} "}, "finish_reason": None}],
        }
        events.append(b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n")
    final = {
        "id": "chatcmpl-bench0123456789",
        "object": "chat.completion.chunk",
        "created": 1735689600,
        "model": "gpt-bench",
        "choices": [],
        "usage": {"prompt_tokens": 42, "completion_tokens": 19, "total_tokens": 61},
    }
    events.append(b"data: " + json.dumps(final, separators=(",", ":")).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


_BODY = _completion()
_JSON_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    b"x-request-id: req_bench\r\nopenai-processing-ms: 1\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\nx-request-id: req_bench\r\ntransfer-encoding: chunked\r\n\r\n"
)


def _sse_chunks(chunks: int) -> list[bytes]:
    """The stream's events, each as one HTTP/1.1 chunk (`chunks` events before [DONE])."""
    return [b"%x\r\n%s\r\n" % (len(e), e) for e in _sse_events(chunks)]


_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


class _UpstreamProtocol(asyncio.Protocol):
    """OpenAI-shaped chat completions: JSON, or SSE when the body asks to stream."""

    def __init__(self, gap: float, chunks: list[bytes]) -> None:
        self.gap = gap
        self.chunks = chunks
        self.url = b""
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        body = b"".join(self.body)
        url, self.url, self.body = self.url, b"", []
        if not url.endswith(b"/chat/completions"):
            self.transport.write(_NOT_FOUND)
        elif b'"stream":true' in body or b'"stream": true' in body:
            asyncio.get_running_loop().create_task(self._stream(self.transport))
        else:
            self.transport.write(_JSON_RESPONSE)

    async def _stream(self, transport: asyncio.Transport) -> None:
        transport.write(_SSE_HEAD + self.chunks[0])
        for chunk in self.chunks[1:]:
            await asyncio.sleep(self.gap)
            if transport.is_closing():
                return
            transport.write(chunk)
        transport.write(b"0\r\n\r\n")


def serve_upstream(gap: float, chunks: int = SSE_CHUNKS) -> None:
    """Run the fake upstream on 127.0.0.1:0; print the port on stdout; serve forever.
    Its SSE answers carry `chunks` events (the last one the usage), then [DONE]."""
    import uvloop

    events = _sse_chunks(chunks)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _UpstreamProtocol(gap, events), "127.0.0.1", 0, backlog=1024
        )
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    uvloop.run(run())


def start_upstream(
    gap_ms: float = 0.0, chunks: int = SSE_CHUNKS
) -> tuple[subprocess.Popen[str], int]:
    """The fake upstream in its own process (this module run as a script): (process, port).
    Its SSE answers carry `chunks` events."""
    proc = subprocess.Popen(
        [sys.executable, __file__, str(gap_ms / 1000), str(chunks)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise SystemExit("fake upstream did not start")
    return proc, int(line)


# --- the client ----------------------------------------------------------------------


@dataclass
class Result:
    status: int
    ttfb: float  # seconds from the write to the first body byte
    total: float  # seconds from the write to the end of the response
    size: int


class _ClientProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Result] | None = None
        self.t0 = self.first = 0.0
        self.size = 0
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(exc)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if not self.first:
            self.first = time.perf_counter()
        self.size += len(body)

    def on_message_complete(self) -> None:
        end = time.perf_counter()
        if self.waiter is not None and not self.waiter.done():
            first = self.first or end
            self.waiter.set_result(Result(self.status, first - self.t0, end - self.t0, self.size))


class Conn:
    """One keep-alive HTTP/1.1 connection; one request at a time; reconnects if closed."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.proto: _ClientProtocol | None = None

    async def _connect(self) -> _ClientProtocol:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(_ClientProtocol, self.host, self.port)
        sock = proto.transport.get_extra_info("socket") if proto.transport else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return proto

    async def request(self, raw: bytes) -> Result:
        proto = self.proto
        if proto is None or proto.transport is None or proto.transport.is_closing():
            proto = self.proto = await self._connect()
        assert proto.transport is not None
        proto.waiter = asyncio.get_running_loop().create_future()
        proto.first = 0.0
        proto.size = 0
        proto.t0 = time.perf_counter()
        proto.transport.write(raw)
        try:
            return await proto.waiter
        except (ConnectionError, httptools.HttpParserError):
            self.proto = None
            raise

    def close(self) -> None:
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.close()
        self.proto = None


def request_bytes(
    method: str, path: str, host: str, headers: dict[str, str], body: bytes = b""
) -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"host: {host}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    if body or method == "POST":
        head.append(f"content-length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def http_get(host: str, port: int, path: str, limit: float = 2.0) -> Result:
    conn = Conn(host, port)
    try:
        async with asyncio.timeout(limit):
            return await conn.request(request_bytes("GET", path, f"{host}:{port}", {}))
    finally:
        conn.close()


# --- processes -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def config_service_env(data_dir: Path, grpc_port: int, upstream_port: int) -> dict[str, str]:
    return {
        "AIBRIDGE_DATA_DIR": str(data_dir),
        "AIBRIDGE_GRPC_LISTEN": f"127.0.0.1:{grpc_port}",
        "AIBRIDGE_ADMIN_TOKEN": ADMIN,
        "AIBRIDGE_BRIDGE_TOKEN": BRIDGE,
        "AIBRIDGE_PROXY_TOKEN": PROXY,
        "AIBRIDGE_LOG_FORMAT": "json",
        "AIBRIDGE_PROVIDER_0_TYPE": "openai",
        "AIBRIDGE_PROVIDER_0_NAME": PROVIDER,
        "AIBRIDGE_PROVIDER_0_KEY": UPSTREAM_KEY,
        "AIBRIDGE_PROVIDER_0_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
    }


def start_config_service(data_dir: Path, upstream_port: int, log_dir: Path) -> tuple[Proc, str]:
    daemon = start(
        "config-service",
        ["config-service"],
        config_service_env(data_dir, 0, upstream_port),
        log_dir,
        ready="config service ready",
        timeout=60,
    )
    return daemon, str(daemon.ready["listen"])


def start_script(
    name: str, script: Path, env: dict[str, str], log_dir: Path, args: tuple[str, ...] = ()
) -> Proc:
    """Like `start`, for a Python script of bench/ instead of `aibridge` (same clean
    environment plus `env`, stderr into a log file in `log_dir`)."""
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed by Proc.stop
    popen = subprocess.Popen(
        [sys.executable, str(script), *args],
        env=clean_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )
    return Proc(name, popen, log_path, log, time.monotonic(), {})


def bridge_env(target: str, port: int, data_dir: Path, log_level: str = "info") -> dict[str, str]:
    return {
        "AIBRIDGE_DATA_DIR": str(data_dir),  # the recording spool, if one is needed
        "AIBRIDGE_CONFIG_SERVICE": target,
        "AIBRIDGE_BRIDGE_TOKEN": BRIDGE,
        "AIBRIDGE_BRIDGE_LISTEN": f"127.0.0.1:{port}",
        "AIBRIDGE_LOG_FORMAT": "json",
        "AIBRIDGE_LOG_LEVEL": log_level,
        "AIBRIDGE_NODE_ID": f"bench-bridge-{port}",
    }


def create_gateway_token(target: str) -> str:
    """A member-role gateway token, created through the admin API."""
    import grpc

    from aibridge.config.v1 import token_admin_service_pb2 as ta
    from aibridge.config.v1 import token_admin_service_pb2_grpc as ta_grpc
    from aibridge.config.v1 import token_pb2

    with grpc.insecure_channel(target) as channel:
        created = ta_grpc.TokenAdminServiceStub(channel).CreateToken(
            ta.CreateTokenRequest(principal_name="bench-user", role=token_pb2.ROLE_MEMBER),
            metadata=(("authorization", f"Bearer {ADMIN}"),),
            timeout=30,
        )
    return str(created.secret)


def wait_ready(port: int, timeout: float = 60, poll: float = 0.005) -> float:
    """Poll GET /readyz until 200; returns time.monotonic() at the first 200."""

    async def run() -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if (await http_get("127.0.0.1", port, "/readyz")).status == 200:
                    return time.monotonic()
            except (TimeoutError, OSError, httptools.HttpParserError):
                pass
            await asyncio.sleep(poll)
        raise RuntimeError(f"port {port}: /readyz not 200 after {timeout}s")

    return asyncio.run(run())


def serve_bridge(proc: Proc, port: int) -> Proc:
    """`proc`, a bridge on `port`, once it listens and answers /readyz."""
    proc.wait_for_log("bridge listening")
    wait_ready(port)
    return proc


@dataclass
class Stack:
    """What every bridge benchmark starts with: a temp dir, the fake upstream, a config
    service seeded with it (provider `fake`) and a member gateway token."""

    tmp: Path
    up_port: int
    upstream_pid: int
    target: str  # the config service's gRPC target
    token: str
    daemons: list[Proc] = field(default_factory=list)

    def add(self, proc: Proc) -> Proc:
        """`proc`, stopped (last started, first stopped) when the stack ends."""
        self.daemons.append(proc)
        return proc

    def stop_daemons(self) -> None:
        for d in reversed(self.daemons):
            d.stop()
        self.daemons.clear()


class Upstream(Protocol):
    """A running fake upstream: its port, the pid whose CPU is its cost, stop()."""

    port: int
    pid: int

    def stop(self) -> None: ...


class PythonUpstream:
    """The bench's own fake upstream (`serve_upstream`) in its own process."""

    def __init__(self, gap_ms: float = 0.0, chunks: int = SSE_CHUNKS) -> None:
        self.proc, self.port = start_upstream(gap_ms, chunks)
        self.pid = self.proc.pid

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@contextlib.contextmanager
def stack(
    gap_ms: float = 0.0,
    prefix: str = "aibridge-bench-",
    chunks: int = SSE_CHUNKS,
    upstream: Callable[[Path], Upstream] | None = None,
) -> Iterator[Stack]:
    """A `Stack` on `upstream(tmp)` (default: the Python upstream pausing `gap_ms` between
    its `chunks` SSE chunks); all of it stopped and removed on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp_name:
        tmp = Path(tmp_name)
        up = upstream(tmp) if upstream is not None else PythonUpstream(gap_ms, chunks)
        daemons: list[Proc] = []
        try:
            service, target = start_config_service(tmp / "data", up.port, tmp)
            daemons.append(service)
            token = create_gateway_token(target)
            its = Stack(tmp, up.port, up.pid, target, token, daemons)
            yield its
        finally:
            for d in reversed(daemons):
                d.stop()
            up.stop()


if __name__ == "__main__":  # the fake upstream: python bench/_stack.py GAP_SECONDS CHUNKS
    serve_upstream(float(sys.argv[1]), int(sys.argv[2]))
