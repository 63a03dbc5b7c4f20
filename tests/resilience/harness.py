"""Shared tools of the resilience tests: real processes, a cuttable TCP proxy, a stream-guarantees recorder, admin helpers and secret scanners.

Everything here talks to real sockets; nothing is mocked. Processes are started with the
suite's one launcher (tests/fixtures/processes.py) and collected by `Procs`, which kills
them all at teardown (also when a test fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import config_service_pb2_grpc as cs_grpc
from aibridge.config.v1 import provider_admin_service_pb2 as ppb
from aibridge.config.v1 import provider_admin_service_pb2_grpc as ppb_grpc
from aibridge.config.v1 import provider_pb2 as pb
from aibridge.config.v1 import token_admin_service_pb2 as tpb
from aibridge.config.v1 import token_admin_service_pb2_grpc as tpb_grpc
from aibridge.config.v1 import token_pb2
from aibridge.rulebook import NAME_RE
from data_plane.dump import safe_component
from tests.fixtures.processes import Proc
from tests.fixtures.services import (
    ADMIN_TOKEN,
    BRIDGE_TOKEN,
    PROXY_TOKEN,
    Procs,
)
from tests.fixtures.upstream import cancel_all, listening, reset
from tests.fixtures.waits import eventually

ADMIN_MD = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
BRIDGE_MD = (("authorization", f"Bearer {BRIDGE_TOKEN}"),)
PROXY_MD = (("authorization", f"Bearer {PROXY_TOKEN}"),)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def health_is(target: str, status: int, service: str = "") -> bool:
    """Whether the gRPC health service at `target` answers `status` for `service`."""
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5
            )
        except grpc.aio.AioRpcError:
            return False
    return bool(answer.status == status)


def bridge_url(proc: Proc) -> str:
    return str(proc.ready["url"])


async def bridge_ready(proc: Proc, version: str | int, within: float = 15.0) -> None:
    """Until the bridge's /readyz reports `version`; on timeout, fail with its log."""
    import httpx

    async def on_version() -> bool:
        async with httpx.AsyncClient(timeout=5) as http:
            answer = (await http.get(bridge_url(proc) + "/readyz")).json()
            return bool(answer.get("version") == str(version))

    try:
        await eventually(on_version, within)
    except AssertionError:
        tail = proc.tail(30)
        raise AssertionError(
            f"bridge not on version {version} in {within}s; log:\n{tail}"
        ) from None


# ------------------------------------------------------------------------ TCP fault proxy


class TcpProxy:
    """A TCP forwarder a test can cut (close every connection, refuse new ones) and
    restore. With several targets it fails over: each new connection goes to the first
    target that accepts it."""

    def __init__(self, targets: Sequence[tuple[str, int]]) -> None:
        self.targets = list(targets)
        self.port = 0
        self.server: asyncio.Server | None = None
        self._pairs: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.connections = 0
        self.accepted: list[float] = []  # monotonic time of every connection attempt
        self.blackholed = False  # accept and read, never forward: a silent partition

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> TcpProxy:
        self.server, self.port = await listening(self._handle, "127.0.0.1", self.port)
        return self

    async def cut(self) -> None:
        """Stop listening (new connections are refused) and reset every open one."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self._pairs):
            with contextlib.suppress(Exception):
                reset(writer)
        self._pairs.clear()
        await cancel_all(self._tasks)

    async def restore(self) -> None:
        self.blackholed = False
        if self.server is None:
            await self.start()

    async def close(self) -> None:
        await self.cut()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append(time.monotonic())
        upstream = None
        for host, port in self.targets:
            try:
                upstream = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
                break
            except (OSError, TimeoutError):
                continue
        if upstream is None:
            reset(writer)
            return
        self.connections += 1
        up_reader, up_writer = upstream
        self._pairs.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if self.blackholed:
                        continue  # swallowed: the peer waits for an answer that never comes
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        tasks = [
            asyncio.ensure_future(pipe(reader, up_writer)),
            asyncio.ensure_future(pipe(up_reader, writer)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._tasks.difference_update(tasks)
            self._pairs.discard(writer)
            self._pairs.discard(up_writer)


# ------------------------------------------------------------- stream guarantees checker


def _provider_problems(p: pb.Provider, scope: int, where: str) -> list[str]:
    """Problems with one provider of a snapshot of `scope`: name, id, status, key material."""
    problems = []
    if not NAME_RE.match(p.name) or not p.id:
        problems.append(f"{where}: provider {p.name!r} lacks a valid name or id")
    if p.status == pb.PROVIDER_STATUS_UNSPECIFIED:
        problems.append(f"{where}: provider {p.name!r} has no status")
    if p.status == pb.PROVIDER_STATUS_ERROR and not p.status_reason:
        problems.append(f"{where}: provider {p.name!r} is ERROR without a reason")
    secrets = [k.secret for k in p.keys if k.secret]
    bedrock_secret = p.bedrock.access_key_secret if p.HasField("bedrock") else ""
    if scope != cs.SNAPSHOT_SCOPE_BRIDGE and (secrets or bedrock_secret):
        problems.append(f"{where}: key material outside the bridge scope in {p.name!r}")
    if scope == cs.SNAPSHOT_SCOPE_PROXY and (p.keys or (p.bedrock.access_key_hint)):
        problems.append(f"{where}: the proxy scope carries keys or hints for {p.name!r}")
    unusable = p.status != pb.PROVIDER_STATUS_ENABLED
    if scope == cs.SNAPSHOT_SCOPE_BRIDGE and unusable and (secrets or bedrock_secret):
        problems.append(f"{where}: unusable provider {p.name!r} carries secrets")
    return problems


def check_snapshot(snap: cs.ProviderSnapshot, scope: int) -> list[str]:
    """Problems with one snapshot: whole, sorted, unique, statused, scoped."""
    problems = []
    where = f"version {snap.version}"
    if not snap.version or not snap.version.isdigit():
        problems.append(f"{where}: version is not a revision number")
    if snap.scope != scope:
        problems.append(f"{where}: scope {snap.scope} != {scope}")
    names = [p.name for p in snap.providers]
    if names != sorted(names):
        problems.append(f"{where}: providers not sorted by name: {names}")
    if len(set(names)) != len(names):
        problems.append(f"{where}: duplicate provider names: {names}")
    for p in snap.providers:
        problems += _provider_problems(p, scope, where)
    if scope == cs.SNAPSHOT_SCOPE_METADATA and snap.gateway_tokens:
        problems.append(f"{where}: gateway tokens in the metadata scope")
    return problems


@dataclass
class StreamRecorder:
    """A raw WatchProviders client that records every snapshot it receives, reconnects
    (with `known_version`, like a daemon) and checks the stream's guarantees."""

    target: str
    metadata: tuple[tuple[str, str], ...] = BRIDGE_MD
    scope: int = cs.SNAPSHOT_SCOPE_BRIDGE
    node_id: str = "recorder"
    received: list[tuple[float, cs.ProviderSnapshot]] = field(default_factory=list)
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def versions(self) -> list[str]:
        return [s.version for _, s in self.received]

    @property
    def version(self) -> str:
        return self.received[-1][1].version if self.received else ""

    def start(self) -> StreamRecorder:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        while True:
            channel = grpc.aio.insecure_channel(
                self.target,
                options=[
                    ("grpc.initial_reconnect_backoff_ms", 50),
                    ("grpc.min_reconnect_backoff_ms", 50),
                    ("grpc.max_reconnect_backoff_ms", 200),
                ],
            )
            try:
                stub = cs_grpc.ConfigServiceStub(channel)
                call = stub.WatchProviders(
                    cs.WatchProvidersRequest(node_id=self.node_id, known_version=self.version),
                    metadata=self.metadata,
                )
                async for response in call:
                    self.received.append((time.monotonic(), response.snapshot))
                    self._changed.set()
            except grpc.aio.AioRpcError as exc:
                self.errors.append(exc.code().name)
            finally:
                await channel.close()
            self.reconnects += 1
            await asyncio.sleep(0.05)  # pace: reconnect backoff, as a real client does

    async def wait_for(self, version: str, within: float = 10.0) -> float:
        """Until a snapshot at `version` or later arrived; returns the wait."""
        return await eventually(
            lambda: self.version and int(self.version) >= int(version), within, 0.005
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def check(self, final_revision: int | None = None) -> None:
        """Versions strictly increase, every snapshot is whole and scoped, none is last-but-stale."""
        problems = []
        versions = [int(v) for v in self.versions]
        for before, after in itertools.pairwise(versions):
            if after <= before:
                problems.append(f"version went from {before} to {after}: {versions}")
        for _, snap in self.received:
            problems += check_snapshot(snap, self.scope)
        if final_revision is not None and (not versions or versions[-1] != final_revision):
            problems.append(f"last version {versions[-1:]} != database revision {final_revision}")
        assert not problems, "\n".join(problems)


def database_revision(database_url: str) -> int:
    """The committed revision, read with SQL straight from the database."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT revision FROM revision")).scalar_one())
    finally:
        engine.dispose()


def dump_database_text(database_url: str) -> bytes:
    """Every column of every table as text (a pg_dump / raw-file equivalent for scans)."""
    engine = create_engine(database_url)
    chunks: list[bytes] = []
    try:
        with engine.connect() as conn:
            for table in inspect(conn).get_table_names():
                for row in conn.execute(text(f'SELECT * FROM "{table}"')):  # noqa: S608
                    chunks.append(repr(tuple(row)).encode())
    finally:
        engine.dispose()
    return b"\n".join(chunks)


def sqlite_files(database_url: str) -> list[Path]:
    path = Path(str(make_url(database_url).database))
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-journal")) if p.exists()]


# --------------------------------------------------------------------------- admin helpers


class Admin:
    """Async admin calls against one config service target."""

    def __init__(self, target: str, md: tuple[tuple[str, str], ...] = ADMIN_MD) -> None:
        self.target = target
        self.md = md
        self.channel = grpc.aio.insecure_channel(target)
        self.providers = ppb_grpc.ProviderAdminServiceStub(self.channel)
        self.tokens = tpb_grpc.TokenAdminServiceStub(self.channel)
        self.config = cs_grpc.ConfigServiceStub(self.channel)
        self.responses: list[bytes] = []  # every admin answer, serialized, for scans

    async def close(self) -> None:
        await self.channel.close()

    async def create_provider(
        self, name: str, ptype: int, base_url: str, keys: Iterable[str] = (), **kw: Any
    ) -> pb.Provider:
        response = await self.providers.CreateProvider(
            ppb.CreateProviderRequest(
                name=name, type=ptype, base_url=base_url, keys=list(keys), **kw
            ),
            metadata=self.md,
            timeout=10,
        )
        self.responses.append(response.SerializeToString())
        return response.provider

    async def create_token(self, name: str, role: int = token_pb2.ROLE_MEMBER) -> str:
        response = await self.tokens.CreateToken(
            tpb.CreateTokenRequest(principal_name=name, role=role), metadata=self.md, timeout=10
        )
        return str(response.secret)

    async def snapshot(self, md: tuple[tuple[str, str], ...]) -> cs.ProviderSnapshot:
        response = await self.config.GetProviderSnapshot(
            cs.GetProviderSnapshotRequest(), metadata=md, timeout=10
        )
        return response.snapshot

    async def version(self) -> int:
        return int((await self.snapshot(BRIDGE_MD)).version)

    async def subscribers(self) -> dict[str, cs.Subscriber]:
        response = await self.config.ListSubscribers(
            cs.ListSubscribersRequest(), metadata=self.md, timeout=10
        )
        return {s.node_id: s for s in response.subscribers}


def scan(haystacks: dict[str, bytes], needles: Iterable[str]) -> list[str]:
    """Where any needle occurs (as UTF-8 bytes): 'place: needle-fragment'."""
    wanted = list(needles)  # an iterator would be used up by the first place
    hits = []
    for where, data in haystacks.items():
        for needle in wanted:
            if needle.encode() in data:
                hits.append(f"{where}: {needle[:6]}...")
    return hits


def walk_files(root: Path) -> list[Path]:
    return [Path(d) / f for d, _, files in os.walk(root) for f in files]


def dumps_written(bridge: Proc, dumps: Path, at_least: int) -> bool:
    """At least `at_least` requests logged by the bridge, and each one's dump written whole:
    the bridge logs a request, then dumps it, its `.req.txt` last."""
    logged = [safe_component(str(r.get("request_id"))) for r in bridge.events("request")]
    written = {
        path.name.removesuffix(".req.txt").split("-", 1)[1]
        for path in walk_files(dumps)
        if path.name.endswith(".req.txt")
    }
    return len(logged) >= at_least and all(rid in written for rid in logged)


@dataclass(frozen=True)
class Served:
    """A config service started with providers and a member token."""

    target: str
    member: str  # the gateway token of the member "alice"
    version: str  # the revision once all of them exist


async def serve_providers(
    procs: Procs, database_url: str, *providers: tuple[str, int, str, list[str]]
) -> Served:
    """A config service with each provider created ((name, type, base URL, keys), as
    `Admin.create_provider` takes them) and a member token "alice"."""
    service = await asyncio.to_thread(procs.config_service, database_url)
    target = str(service.ready["target"])
    admin = Admin(target)
    try:
        for args in providers:
            await admin.create_provider(*args)
        member = await admin.create_token("alice")
        version = str(await admin.version())
    finally:
        await admin.close()
    return Served(target, member, version)


async def proxy_with_member(
    procs: Procs, database_url: str, bridge: str = "http://127.0.0.1:9", **env: str
) -> tuple[Proc, str]:
    """A config service with one member token, and a proxy following it: (proxy, token)."""
    service = await asyncio.to_thread(procs.config_service, database_url)
    target = str(service.ready["target"])
    admin = Admin(target)
    try:
        token = await admin.create_token("member")
        version = await admin.version()
    finally:
        await admin.close()
    proxy = await asyncio.to_thread(procs.proxy, target, bridge, "proxy-1", **env)
    await eventually(
        lambda: any(int(r["version"]) >= version for r in proxy.events("snapshot applied")),
        within=15,
    )
    return proxy, token


def proxy_address(proc: Proc) -> str:
    return str(proc.ready["listen"])
