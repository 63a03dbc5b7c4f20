"""Fakes at the transport for the data-plane tests: a gRPC ConfigService servicer and snapshot
builders (the fake upstream is the suite's one, tests/fixtures/upstream.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
import grpc.aio

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import config_service_pb2_grpc as cs_grpc
from aibridge.config.v1 import provider_pb2 as pb
from aibridge.config.v1 import token_pb2, usage_pb2
from aibridge.masking import sha256_hex
from data_plane.bridge.interception import Record
from data_plane.bridge.interception.record import interception
from data_plane.bridge.server import Bridge
from data_plane.bridge.settings import BridgeSettings
from data_plane.recording.batch import Batch
from tests.fixtures.upstream import FakeUpstream
from tests.fixtures.waits import eventually

BRIDGE_TOKEN = "bridge-token-0123456789abcdef0123456789"
MEMBER_TOKEN = "gw-member-0123456789abcdef0123456789abcdef"
AUTH = {"authorization": f"Bearer {MEMBER_TOKEN}"}  # a gateway user's headers
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
OWNER_TOKEN = "gw-owner-0123456789abcdef0123456789abcdef"
AUDITOR_TOKEN = "gw-auditor-0123456789abcdef0123456789abcdef"
KEY_A = "sk-pooled-key-a-000000000000000000000"
KEY_B = "sk-pooled-key-b-111111111111111111111"


def gateway_tokens() -> list[token_pb2.GatewayToken]:
    return [
        token_pb2.GatewayToken(
            token_id=f"t-{i}",
            sha256=sha256_hex(secret),
            principal_id=f"p-{i}",
            principal_name=name,
            role=role,
        )
        for i, (secret, name, role) in enumerate(
            [
                (MEMBER_TOKEN, "member", token_pb2.ROLE_MEMBER),
                (OWNER_TOKEN, "owner", token_pb2.ROLE_OWNER),
                (AUDITOR_TOKEN, "auditor", token_pb2.ROLE_AUDITOR),
            ]
        )
    ]


def provider(
    name: str,
    ptype: int,
    base_url: str,
    keys: list[str] | None = None,
    status: int = pb.PROVIDER_STATUS_ENABLED,
    reason: str = "",
    bedrock: pb.BedrockSettings | None = None,
) -> pb.Provider:
    return pb.Provider(
        id=f"id-{name}",
        name=name,
        type=ptype,
        base_url=base_url,
        status=status,  # type: ignore[arg-type]
        status_reason=reason,
        bedrock=bedrock,
        keys=[pb.ProviderKey(id=f"k{i}", secret=k) for i, k in enumerate(keys or [])],
        key_count=len(keys or []),
    )


def snapshot(
    version: str, providers: list[pb.Provider], tokens: list[token_pb2.GatewayToken] | None = None
) -> cs.ProviderSnapshot:
    return cs.ProviderSnapshot(
        version=version,
        providers=sorted(providers, key=lambda p: p.name),
        gateway_tokens=gateway_tokens() if tokens is None else tokens,
        scope=cs.SNAPSHOT_SCOPE_BRIDGE,
    )


class FakeConfigService(cs_grpc.ConfigServiceServicer):
    """Streams the current snapshot like the real one: at once unless known, then on change."""

    def __init__(self) -> None:
        self.current: cs.ProviderSnapshot | None = None
        self.changed = asyncio.Condition()
        self.reports: list[cs.ReportStatusRequest] = []
        self.watches: list[cs.WatchProvidersRequest] = []

    async def publish(self, snap: cs.ProviderSnapshot) -> None:
        async with self.changed:
            self.current = snap
            self.changed.notify_all()

    async def WatchProviders(self, request: Any, context: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        if dict(context.invocation_metadata()).get("authorization") != f"Bearer {BRIDGE_TOKEN}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")
        self.watches.append(request)
        sent = request.known_version
        while True:
            async with self.changed:
                await self.changed.wait_for(
                    lambda sent=sent: self.current is not None and self.current.version != sent
                )
                snap = self.current
            assert snap is not None
            sent = snap.version
            yield cs.WatchProvidersResponse(snapshot=snap)

    async def ReportStatus(self, request: Any, context: Any) -> Any:  # type: ignore[override]
        self.reports.append(request)
        return cs.ReportStatusResponse()

    async def wait_report(self, version: str, within: float = 5.0) -> cs.ReportStatusRequest:
        def found() -> cs.ReportStatusRequest | None:
            return next((r for r in self.reports if r.version == version), None)

        await eventually(found, within)
        report = found()
        assert report is not None
        return report


@dataclass
class ConfigServer:
    service: FakeConfigService
    port: int = 0
    server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = grpc.aio.server()
        cs_grpc.add_ConfigServiceServicer_to_server(self.service, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)
            self.server = None


StartBridge = Callable[..., Awaitable[Bridge]]
# (*providers, **settings) -> the URL of a bridge serving them (data_plane/conftest.py `serve`)
Serve = Callable[..., Awaitable[str]]


class Daemon(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


D = TypeVar("D", bound=Daemon)


@contextlib.asynccontextmanager
async def daemon_starter(
    build: Callable[[int, dict[str, str]], D], wait: Callable[[D, str], Awaitable[None]]
) -> AsyncIterator[Callable[..., Awaitable[D]]]:
    """`start(wait_version=None, **env)` for a fixture: `build(index, env)` then start, and
    wait for a snapshot version when asked; every daemon started is stopped on exit."""
    started: list[D] = []

    async def start(wait_version: str | None = None, **env: str) -> D:
        daemon = build(len(started), env)
        await daemon.start()
        started.append(daemon)
        if wait_version is not None:
            await wait(daemon, wait_version)
        return daemon

    yield start
    for daemon in started:
        await daemon.stop()


async def wait_for_version(bridge: Bridge, version: str) -> None:
    await eventually(lambda: bridge.app.table.version == version)


def openai_provider(
    upstream: FakeUpstream, name: str = "openai", keys: list[str] | None = None, **kw: Any
) -> pb.Provider:
    return _on_upstream(name, pb.PROVIDER_TYPE_OPENAI, upstream.url + "/v1/", keys, kw)


def anthropic_provider(
    upstream: FakeUpstream, name: str = "anthropic", keys: list[str] | None = None, **kw: Any
) -> pb.Provider:
    return _on_upstream(name, pb.PROVIDER_TYPE_ANTHROPIC, upstream.url + "/", keys, kw)


def _on_upstream(
    name: str, ptype: int, base_url: str, keys: list[str] | None, kw: dict[str, Any]
) -> pb.Provider:
    """A provider on the fake upstream, with key KEY_A unless `keys` are given."""
    return provider(name, ptype, base_url, [KEY_A] if keys is None else keys, **kw)


async def first_dumped_response(folder: Path, within: float) -> Path:
    """The first response dump written under `folder`, once there is one."""
    found: list[Path] = []
    await eventually(lambda: found.extend(folder.rglob("*.resp.txt")) or found, within=within)
    return found[0]


def dumped_body(dump_file: Path) -> bytes:
    return dump_file.read_bytes().split(b"\r\n\r\n", 1)[1]


# The `bridge_settings` fixture: settings of the index-th test bridge, `env` on top.
BridgeSettingsFor = Callable[[int, dict[str, str]], BridgeSettings]


class ManualClock:
    """A monotonic clock that moves only when a test sets `now` (no sleeping for time to pass)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ListSink:
    """A record sink that keeps every interception record it is given, in order."""

    def __init__(self) -> None:
        self.records: list[usage_pb2.Interception] = []
        self.submitted: list[Record] = []  # what the bridge handed over, as it was

    def submit(self, record: Record) -> None:
        """Keeps the record as the bridge made it, once its values encode as a batch."""
        self.submitted.append(record)
        values = record.values()
        batch = Batch()
        batch.add(values)
        batch.encode()
        self.records.append(interception(values))

    async def one(self, within: float = 5.0) -> usage_pb2.Interception:
        """The only record, once it is there."""
        await eventually(lambda: self.records, within)
        assert len(self.records) == 1, self.records
        return self.records[0]
