"""`--workers N`: the bridge and the proxy as supervised worker processes on one port (real processes)."""

from __future__ import annotations

import ast
import asyncio
import base64
import functools
import os
import re
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import h11
import httpx
import pytest

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import provider_pb2 as pb
from aibridge.config.v1 import token_admin_service_pb2 as tpb
from aibridge.config.v1 import token_pb2
from aibridge.envconfig import MAX_WORKERS, worker_count
from aibridge.workers import METRICS_PREFIX, Daemon, supervise
from data_plane.bridge.settings import BridgeSettings
from tests.fixtures import processes
from tests.fixtures.daemons import Refused, refusing_serve
from tests.fixtures.processes import Proc
from tests.fixtures.services import BRIDGE_TOKEN, PROXY_TOKEN, Procs
from tests.fixtures.upstream import FakeUpstream
from tests.fixtures.waits import eventually
from tests.resilience.harness import Admin

POOL_KEY = "sk-workers-pool-key-000000000000000000"
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
_WORKER_INFO = re.compile(r'_worker_info\{pid="(\d+)",worker="(\d+)"\} 1\.0')
_VERSION = re.compile(r'_snapshot_version_info\{pid="(\d+)",version="(\d+)"\} 1\.0')


def bridge_workers(procs: Procs, target: str, workers: int = 2, **env: str) -> Proc:
    return procs.start(
        "bridge",
        ["bridge"],
        {
            "AIBRIDGE_BRIDGE_TOKEN": BRIDGE_TOKEN,
            "AIBRIDGE_BRIDGE_LISTEN": "127.0.0.1:0",
            "AIBRIDGE_CONFIG_SERVICE": target,
            "AIBRIDGE_NODE_ID": "bridge-1",
            "AIBRIDGE_LOG_FORMAT": "json",
            "AIBRIDGE_WORKERS": str(workers),
            **env,
        },
        "workers ready",
    )


def url(proc: Proc) -> str:
    return f"http://{proc.ready['listen']}"


async def scrape(base: str) -> str:
    """/metrics on a fresh connection (so the kernel may pick any worker)."""
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(base + "/metrics")
        assert response.status_code == 200
        return response.text


def serving_pid(page: str) -> int:
    found = _WORKER_INFO.findall(page)
    assert len(found) == 1, page
    return int(found[0][0])


def versions(page: str) -> dict[int, int]:
    return {int(pid): int(version) for pid, version in _VERSION.findall(page)}


async def pids_serving(base: str, wanted: set[int], within: float = 15) -> None:
    """Until every pid in `wanted` has rendered a /metrics page (fresh connections)."""
    seen: set[int] = set()

    async def all_seen() -> bool:
        seen.add(serving_pid(await scrape(base)))
        return wanted <= seen

    await eventually(all_seen, within)


def worker_pids(proc: Proc) -> set[int]:
    """The parent's live children (from /proc, no psutil)."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    try:
        return {int(pid) for pid in children.read_text().split()}
    except FileNotFoundError:
        return set()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def metrics_dir_of(pid: int) -> Path:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for entry in environ:
        if entry.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
            return Path(entry.split(b"=", 1)[1].decode())
    raise AssertionError("worker has no PROMETHEUS_MULTIPROC_DIR")


async def acked_by(admin: Admin, nodes: set[str], version: int) -> bool:
    listed = await admin.config.ListSubscribers(
        cs.ListSubscribersRequest(), metadata=admin.md, timeout=10
    )
    done = {s.node_id for s in listed.subscribers if s.version_acked == str(version)}
    return nodes <= done


async def chat(base: str, token: str) -> int:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        response = await http.post(
            "/openai/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {token}"},
        )
        return response.status_code


async def chat_and_worker(base: str, token: str) -> tuple[int, int]:
    """A chat's status and the pid of the worker that answered it (/metrics on the same
    keep-alive connection, so on the same worker)."""
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as http:
        response = await http.post(
            "/openai/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {token}"},
        )
        page = await http.get("/metrics")
        return response.status_code, serving_pid(page.text)


async def on_one_connection(
    port: int, asks: list[tuple[bytes, list[tuple[bytes, bytes]]]]
) -> list[tuple[int, bytes]]:
    """GET each (target, headers) in turn on one keep-alive connection: (status, body) each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h11.Connection(h11.CLIENT)
    answers: list[tuple[int, bytes]] = []
    try:
        for target, headers in asks:
            writer.write(conn.send(h11.Request(method="GET", target=target, headers=headers)))
            writer.write(conn.send(h11.EndOfMessage()))
            status, body = 0, b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await asyncio.wait_for(reader.read(65536), 10))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            answers.append((status, body))
            conn.start_next_cycle()
    finally:
        writer.close()
    return answers


_METRICS = (b"/metrics", [(b"host", b"proxy")])


async def proxy_and_worker(port: int, token: str) -> tuple[int, int]:
    """The status of an absolute-form request through the proxy with `token`, and the pid of
    the worker that answered it (/metrics next on the same connection)."""
    basic = b"Basic " + base64.b64encode(f"user:{token}".encode())
    headers = [(b"host", b"127.0.0.1:9"), (b"proxy-authorization", basic)]
    (status, _), (_, page) = await on_one_connection(
        port, [(b"http://127.0.0.1:9/", headers), _METRICS]
    )
    return status, serving_pid(page.decode())


async def ca_and_worker(port: int) -> tuple[bytes, int]:
    """The CA certificate a proxy worker hands out, and that worker's pid."""
    (status, pem), (_, page) = await on_one_connection(
        port, [(b"/ca-cert.pem", [(b"host", b"proxy")]), _METRICS]
    )
    assert status == 200
    return pem, serving_pid(page.decode())


Seeded = tuple[Proc, Admin]


@pytest.fixture
async def seeded(procs: Procs, upstream: FakeUpstream, database_url: str) -> AsyncIterator[Seeded]:
    """A config service (subprocess) with provider `openai` on the fake upstream, and its admin
    client (closed at the end)."""
    service = await asyncio.to_thread(procs.config_service, database_url)
    admin = Admin(service.ready["target"])
    try:
        await admin.create_provider(
            "openai", pb.PROVIDER_TYPE_OPENAI, upstream.url + "/v1/", [POOL_KEY]
        )
        yield service, admin
    finally:
        await admin.close()


async def workers_and_member(procs: Procs, seeded: Seeded) -> tuple[Proc, str]:
    """Two bridge workers on the seeded service, and a member token made before they start."""
    service, admin = seeded
    member = await admin.create_token("alice")
    return await asyncio.to_thread(bridge_workers, procs, service.ready["target"]), member


async def acked_by_both_bridge_workers(admin: Admin) -> int:
    """The current version, once both bridge workers have acknowledged it."""
    version = await admin.version()
    await eventually(lambda: acked_by(admin, {"bridge-1-w0", "bridge-1-w1"}, version), 15)
    return version


def test_worker_count_accepts_a_number_or_auto() -> None:
    """AIBRIDGE_WORKERS is a count from 1 up, or `auto` for the cores this process may use."""
    assert worker_count("3") == 3
    assert worker_count("auto") == len(os.sched_getaffinity(0))
    for bad in ("0", "-1", "two", "", str(MAX_WORKERS + 1), "1\x00"):
        with pytest.raises(ValueError, match=r"whole number|between"):
            worker_count(bad)


async def test_every_bridge_worker_serves_and_follows_the_same_version(
    procs: Procs, seeded: Seeded
) -> None:
    """With 2 workers both serve on the one port, each follows as <node>-w<i>, and an admin write reaches both (their /metrics merged)."""
    bridge, member = await workers_and_member(procs, seeded)
    _, admin = seeded
    pids = set(bridge.ready["pids"])
    assert len(pids) == 2 and pids == worker_pids(bridge)
    await pids_serving(url(bridge), pids)
    for _ in range(10):
        assert await chat(url(bridge), member) == 200

    await admin.create_token("bob")
    version = await acked_by_both_bridge_workers(admin)

    async def both_on_version() -> bool:
        return versions(await scrape(url(bridge))) == dict.fromkeys(pids, version)

    await eventually(both_on_version, 15)
    # Counters are summed over the workers: 10 answered chats, whoever served them.
    page = await scrape(url(bridge))
    # One version series per worker: the versions they left are gone, not shown as 0.
    shown = [line for line in page.splitlines() if "_snapshot_version_info{" in line]
    assert len(shown) == 2, shown
    answered = re.findall(r'aibridged_requests_total\{[^}]*status="200"\} (\S+)', page)
    assert sum(float(n) for n in answered) == 10, page


async def test_a_revoked_token_is_refused_by_every_bridge_worker(
    procs: Procs, seeded: Seeded
) -> None:
    """Once both workers ACK the version that revoked a token, no fresh connection (whichever worker takes it) accepts it."""
    service, admin = seeded
    created = await admin.tokens.CreateToken(
        tpb.CreateTokenRequest(principal_name="mallory", role=token_pb2.ROLE_MEMBER),
        metadata=admin.md,
        timeout=10,
    )
    bridge = await asyncio.to_thread(bridge_workers, procs, service.ready["target"])
    await pids_serving(url(bridge), set(bridge.ready["pids"]))
    assert await chat(url(bridge), created.secret) == 200

    await admin.tokens.RevokeToken(
        tpb.RevokeTokenRequest(id=created.token.id), metadata=admin.md, timeout=10
    )
    await acked_by_both_bridge_workers(admin)
    refused_by: set[int] = set()
    for _ in range(40):
        status, pid = await chat_and_worker(url(bridge), created.secret)
        assert status == 401
        refused_by.add(pid)
    assert refused_by == set(bridge.ready["pids"])


async def test_a_killed_bridge_worker_is_replaced_and_sigterm_ends_all(
    procs: Procs, seeded: Seeded
) -> None:
    """A SIGKILLed worker is replaced (logged) while the port keeps serving; SIGTERM on the parent ends every worker and removes the metrics directory."""
    bridge, member = await workers_and_member(procs, seeded)
    first, second = bridge.ready["pids"]
    metrics_dir = metrics_dir_of(first)
    assert metrics_dir.is_dir() and (metrics_dir.stat().st_mode & 0o077) == 0
    # Settings reach a worker over a pipe: its token is on no command line.
    for pid in (bridge.pid, first, second):
        assert BRIDGE_TOKEN.encode() not in cmdline(pid)

    os.kill(first, signal.SIGKILL)
    await eventually(lambda: bridge.events("worker exited; starting another"), 10)
    exited = bridge.events("worker exited; starting another")[0]
    assert exited["pid"] == first and exited["status"] == "killed by SIGKILL"

    async def serving() -> bool:
        return await chat(url(bridge), member) == 200

    await eventually(serving, 10)  # the other worker has the port meanwhile
    await eventually(lambda: len(worker_pids(bridge)) == 2 and first not in worker_pids(bridge), 15)
    replacement = (worker_pids(bridge) - {second}).pop()
    await eventually(
        lambda: any(r["pid"] == replacement for r in bridge.events("worker ready")), 15
    )
    # It listens only once it holds the snapshot: no connection it takes is answered 503.
    answered = [await chat_and_worker(url(bridge), member) for _ in range(30)]
    assert {status for status, _ in answered} == {200}
    assert {pid for _, pid in answered} == {second, replacement}

    workers = worker_pids(bridge)
    bridge.popen.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(bridge.popen.wait, 20) == 0
    assert not [pid for pid in workers if alive(pid)]
    assert not metrics_dir.exists()
    assert BRIDGE_TOKEN not in "".join(bridge.lines)  # parent's and workers' logs alike


async def test_workers_fail_fast_on_a_taken_port(tmp_path: Path) -> None:
    """With --workers 2 a listen port held by another program is a one-line error and exit 2, no worker started."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = await asyncio.to_thread(
            processes.popen,
            ["bridge", "--workers", "2", "--bridge-listen", f"127.0.0.1:{port}"],
            {"AIBRIDGE_BRIDGE_TOKEN": BRIDGE_TOKEN, "AIBRIDGE_CONFIG_SERVICE": "127.0.0.1:9"},
        )
        _, err = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [
        f"aibridge bridge: cannot listen on 127.0.0.1:{port} (AIBRIDGE_BRIDGE_LISTEN): "
        "address already in use; stop what uses it or set AIBRIDGE_BRIDGE_LISTEN to another "
        "host:port"
    ]


def test_a_worker_start_up_error_ends_the_daemon_once(capfd: pytest.CaptureFixture[str]) -> None:
    """Workers that fail their start-up (exit 2 after one line) before any was ready end the daemon with exit 2, with no restart loop."""
    settings = BridgeSettings.from_env(
        {
            "AIBRIDGE_BRIDGE_TOKEN": BRIDGE_TOKEN,
            "AIBRIDGE_BRIDGE_LISTEN": "127.0.0.1:0",
            "AIBRIDGE_WORKERS": "2",
            "AIBRIDGE_LOG_FORMAT": "json",
        }
    )
    daemon = Daemon("test-daemon", refusing_serve, "AIBRIDGE_BRIDGE_LISTEN", (Refused,))
    assert supervise(daemon, settings) == 2
    err = capfd.readouterr().err
    assert "test-daemon: worker 0 cannot start" in err or "worker 1 cannot start" in err
    assert "Traceback" not in err and "starting another" not in err


async def test_a_proxy_ca_error_ends_the_daemon_before_any_worker(tmp_path: Path) -> None:
    """An unreadable proxy CA is one line and exit 2 from the parent, which checks (or creates) the CA before any worker starts."""
    cert, key = tmp_path / "ca.pem", tmp_path / "ca-key.pem"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    proc = await asyncio.to_thread(
        processes.popen,
        ["proxy", "--workers", "2"],
        {
            "AIBRIDGE_PROXY_TOKEN": PROXY_TOKEN,
            "AIBRIDGE_PROXY_LISTEN": "127.0.0.1:0",
            "AIBRIDGE_CONFIG_SERVICE": "127.0.0.1:9",
            "AIBRIDGE_PROXY_CA_CERT_FILE": str(cert),
            "AIBRIDGE_PROXY_CA_KEY_FILE": str(key),
            "AIBRIDGE_DATA_DIR": str(tmp_path / "data"),
            "AIBRIDGE_LOG_FORMAT": "json",
        },
    )
    try:
        _, err = await asyncio.to_thread(proc.communicate, timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 2, err
    assert "aibridge proxy:" in err and "Traceback" not in err
    assert "starting another" not in err


async def refused_everywhere(admin: Admin, proxy: Proc, nodes: set[str]) -> None:
    """A member token is accepted by every proxy worker; once every worker ACKs its
    revocation, refused (407) by every one."""
    created = await admin.tokens.CreateToken(
        tpb.CreateTokenRequest(principal_name="mallory", role=token_pb2.ROLE_MEMBER),
        metadata=admin.md,
        timeout=10,
    )
    for expected in (403, 407):  # 403: port 9 is not allowed, so the token was accepted
        if expected == 407:
            await admin.tokens.RevokeToken(
                tpb.RevokeTokenRequest(id=created.token.id), metadata=admin.md, timeout=10
            )
        version = await admin.version()
        await eventually(functools.partial(acked_by, admin, nodes, version), 15)
        answered_by: set[int] = set()
        for _ in range(40):
            status, pid = await proxy_and_worker(proxy.port, created.secret)
            assert status == expected
            answered_by.add(pid)
        assert answered_by == set(proxy.ready["pids"])


async def test_every_proxy_worker_serves_follows_and_is_replaced(
    procs: Procs, database_url: str
) -> None:
    """With 2 proxy workers both serve on the one port with the one CA, both apply the current version, both refuse a revoked token, and a SIGKILLed one is replaced."""
    service = await asyncio.to_thread(procs.config_service, database_url)
    admin = Admin(service.ready["target"])
    try:
        await admin.create_token("alice")
        version = await admin.version()
        proxy = await asyncio.to_thread(
            procs.start,
            "proxy",
            ["proxy"],
            {
                "AIBRIDGE_PROXY_TOKEN": PROXY_TOKEN,
                "AIBRIDGE_PROXY_LISTEN": "127.0.0.1:0",
                "AIBRIDGE_CONFIG_SERVICE": service.ready["target"],
                "AIBRIDGE_PROXY_BRIDGE_URL": "http://127.0.0.1:9",
                "AIBRIDGE_DATA_DIR": str(procs.tmp / "proxy-data"),
                "AIBRIDGE_NODE_ID": "proxy-1",
                "AIBRIDGE_LOG_FORMAT": "json",
                "AIBRIDGE_WORKERS": "2",
            },
            "workers ready",
        )
        pids = set(proxy.ready["pids"])
        # One CA for all: created once by the parent (the data dir was empty), not per worker.
        handed_out = [await ca_and_worker(proxy.port) for _ in range(30)]
        assert len({pem for pem, _ in handed_out}) == 1
        assert {pid for _, pid in handed_out} == pids
        await eventually(lambda: acked_by(admin, {"proxy-1-w0", "proxy-1-w1"}, version), 15)

        async def both_on_version() -> bool:
            return versions(await scrape(url(proxy))) == dict.fromkeys(pids, version)

        await eventually(both_on_version, 15)
        await refused_everywhere(admin, proxy, {"proxy-1-w0", "proxy-1-w1"})
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        await eventually(
            lambda: len(worker_pids(proxy)) == 2 and victim not in worker_pids(proxy), 15
        )
        replacement = (worker_pids(proxy) - pids).pop()
        await pids_serving(url(proxy), (pids - {victim}) | {replacement})
    finally:
        await admin.close()


async def test_workers_end_when_their_parent_is_killed(procs: Procs, tmp_path: Path) -> None:
    """SIGKILL on the supervising parent (no chance to pass anything on) still ends every
    worker; the next parent removes the metrics directory it left, not another user's nor a
    symlink."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    theirs, link = tmp / f"{METRICS_PREFIX}theirs", tmp / f"{METRICS_PREFIX}link"
    theirs.mkdir()
    (theirs / ".lock").touch()
    if os.geteuid() == 0:
        os.chown(theirs, 65534, 65534)
    link.symlink_to(theirs)
    env = {"TMPDIR": str(tmp)}
    bridge = await asyncio.to_thread(bridge_workers, procs, "127.0.0.1:9", **env)
    workers = set(bridge.ready["pids"])
    metrics_dir = metrics_dir_of(min(workers))
    assert metrics_dir.parent == tmp
    bridge.kill()
    await eventually(lambda: not any(alive(pid) for pid in workers), 10)
    assert metrics_dir.is_dir()
    second = await asyncio.to_thread(bridge_workers, procs, "127.0.0.1:9", **env)
    assert not metrics_dir.exists()
    assert metrics_dir_of(min(second.ready["pids"])).is_dir()
    if os.geteuid() == 0:
        assert theirs.is_dir()
    assert link.is_symlink()


def test_every_data_plane_gauge_says_how_workers_merge() -> None:
    """Every Gauge of the data plane names its multiprocess_mode (prometheus-client's default
    keeps a dead worker's series for ever): live counts `livesum`, per-worker state `liveall`."""
    root = Path(__file__).resolve().parents[2] / "data_plane"
    missing = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", "")) == "Gauge"
            ):
                modes = [k.value for k in node.keywords if k.arg == "multiprocess_mode"]
                if not modes or not isinstance(modes[0], ast.Constant):
                    missing.append(f"{path.relative_to(root.parent)}:{node.lineno}")
                elif modes[0].value not in ("livesum", "liveall", "livemax", "livemin"):
                    missing.append(
                        f"{path.relative_to(root.parent)}:{node.lineno} {modes[0].value}"
                    )
    assert missing == []


def test_each_bridge_worker_has_its_own_node_id_and_spool_file(tmp_path: Path) -> None:
    """Two workers never share a node id or append to one recording spool, default or set."""
    env = {"AIBRIDGE_BRIDGE_TOKEN": BRIDGE_TOKEN, "AIBRIDGE_DATA_DIR": str(tmp_path)}
    for extra in ({}, {"AIBRIDGE_RECORDING_SPOOL": str(tmp_path / "records.spool")}):
        parent = BridgeSettings.from_env({**env, **extra, "AIBRIDGE_NODE_ID": "edge"})
        workers = [parent.for_worker(f"-w{i}", 4000) for i in range(2)]
        assert [w.node_id for w in workers] == ["edge-w0", "edge-w1"]
        assert {w.listen_port for w in workers} == {4000} and {w.workers for w in workers} == {1}
        spools = {w.recording.spool_path for w in workers}
        assert len(spools) == 2 and parent.recording.spool_path not in spools
        assert {p.parent for p in spools} == {parent.recording.spool_path.parent}
