"""Wiring of aibridgeproxyd: CA, clients, subscriber and the listening socket.

`serve(settings)` runs the daemon until SIGINT/SIGTERM. `Proxy` is the same thing as an
object a test (or `aibridge up`) can start on port 0 and stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from typing import TYPE_CHECKING

from aibridge.collector import tune_collector
from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.logs import get_logger
from aibridge.ports import bind_tcp
from aibridge.telemetry import Telemetry
from aibridge.telemetry import start as start_telemetry
from data_plane.dump import Dumper
from data_plane.follow import make_subscriber, snapshot_applied, start_following
from data_plane.proxy.ca import CertificateAuthority, LeafCache
from data_plane.proxy.context import BridgeHop, Shared, make_proxy_transport
from data_plane.proxy.egress import Egress, Resolver, system_resolve
from data_plane.proxy.front import FrontDoor
from data_plane.proxy.metrics import ProxyMetrics
from data_plane.proxy.routes import build_table
from data_plane.proxy.settings import ProxySettings

if TYPE_CHECKING:
    from aibridge.workers import Worker

log = get_logger(__name__)


class Proxy:
    """aibridgeproxyd in one object: `await start()`, `listen`, `await stop()`."""

    def __init__(
        self,
        settings: ProxySettings,
        *,
        resolver: Resolver = system_resolve,
        telemetry: Telemetry | None = None,
        worker: Worker | None = None,
    ) -> None:
        self.settings = settings
        # `telemetry`: providers a test built; else as the OTEL_* settings say (None: off).
        self.telemetry = telemetry or start_telemetry(settings.telemetry, settings.node_id)
        self._resolver = resolver
        self.worker = worker
        self.metrics = ProxyMetrics(worker.identity if worker else None)
        self.shared: Shared | None = None
        self.subscriber = make_subscriber(
            settings, settings.proxy_token, self.apply, self.metrics.follow
        )
        self.host = settings.listen_host
        self.port = settings.listen_port
        self._server: asyncio.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._front: FrontDoor | None = None

    @property
    def listen(self) -> str:
        host = self.host
        return f"{f'[{host}]' if ':' in host else host}:{self.port}"

    async def apply(self, snapshot: cs.ProviderSnapshot) -> list[cs.ProviderError]:
        """Build the host map of a snapshot and swap it in (one assignment)."""
        assert self.shared is not None, "start() first"
        table, errors = build_table(snapshot)
        self.shared.table = table
        snapshot_applied(
            log, self.metrics, table, intercepted_hosts=sorted(table.hosts), excluded=len(errors)
        )
        return errors

    async def start(self) -> None:
        s = self.settings
        # Bound first: a port that is taken fails before anything else starts.
        sock = bind_tcp(
            "AIBRIDGE_PROXY_LISTEN", s.listen_host, s.listen_port, reuse_port=bool(self.worker)
        )
        try:
            await self._start(sock)
        except BaseException:
            sock.close()
            raise

    async def _start(self, sock: socket.socket) -> None:
        s = self.settings
        cert_path, key_path = s.ca_paths
        ca = await asyncio.to_thread(CertificateAuthority.load_or_create, cert_path, key_path)
        self.shared = Shared(
            settings=s,
            metrics=self.metrics,
            leaves=LeafCache(ca),
            ca_pem=ca.pem,
            bridge=BridgeHop.to(s.bridge_url),
            origins=make_proxy_transport(read_timeout=300.0),
            egress=Egress(s.allowed_private_cidrs, self._resolver),
            dumper=Dumper(s.dump_dir) if s.dump_dir else None,
        )
        if self.telemetry is not None:
            from data_plane.proxy.tracing import ProxyTelemetry  # only when it is on

            self.shared.tracing = ProxyTelemetry(self.telemetry)
        self._task = await start_following(self.subscriber)
        if self.worker is not None:
            await self.worker.first_snapshot(self.subscriber.applied)
        front = self._front = FrontDoor(self.shared)
        # A deep accept queue: a connection flood must not drop a healthy client's SYN
        # (the kernel caps it at net.core.somaxconn).
        self._server = await asyncio.start_server(
            front.handle, sock=sock, limit=2**16, backlog=4096
        )
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = str(sockname[0]), int(sockname[1])
        log.info(
            "proxy ready",
            listen=self.listen,
            bridge_url=s.bridge_url,
            config_service=s.config_service,
            node_id=s.node_id,
            ca_cert_file=str(cert_path),
            max_connections=s.max_connections,
        )
        if self.worker is not None:
            self.worker.ready()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._front is not None:
            # Tunnels and MITM sessions are long-lived: end them rather than wait.
            await self._front.close_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.shared is not None:
            await self.shared.bridge.transport.aclose()
            await self.shared.origins.aclose()
        if self.telemetry is not None:
            await asyncio.to_thread(self.telemetry.shutdown)


def ensure_ca(settings: ProxySettings) -> None:
    """The CA pair exists: generated here, once, when missing (the supervising parent
    runs this before its workers start, so they never race to create two CAs)."""
    CertificateAuthority.load_or_create(*settings.ca_paths)


async def serve(settings: ProxySettings, worker: Worker | None = None) -> None:
    """Run aibridgeproxyd (or one worker of it) until SIGINT/SIGTERM."""
    proxy = Proxy(settings, worker=worker)
    await proxy.start()
    tune_collector()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
        log.info("proxy stopping")
    finally:
        await proxy.stop()
