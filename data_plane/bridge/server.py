"""Wiring of aibridged: the app, the shared HTTP client, the subscriber and uvicorn.

`serve(settings)` runs the daemon until SIGINT/SIGTERM. `Bridge` is the same thing as
an object a test (or `aibridge up`) can start on port 0 and stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Generator
from typing import TYPE_CHECKING, Literal

import httpx
import uvicorn

from aibridge.collector import tune_collector
from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.logs import get_logger
from aibridge.ports import bind_tcp
from aibridge.telemetry import Telemetry
from aibridge.telemetry import start as start_telemetry
from data_plane.body_budget import BodyBudget
from data_plane.bridge.app import BridgeApp
from data_plane.bridge.bedrock_adapter import load_factory
from data_plane.bridge.connections import ConnectionGuard
from data_plane.bridge.interception import RecordSink
from data_plane.bridge.metrics import BridgeMetrics
from data_plane.bridge.routing import BuildContext, build_table
from data_plane.bridge.settings import BridgeSettings
from data_plane.bridge.upstream import BedrockFactory
from data_plane.dump import Dumper
from data_plane.follow import make_subscriber, snapshot_applied, start_following
from data_plane.http_client import KEEPALIVE_EXPIRY, MAX_CONNECTIONS, MAX_KEEPALIVE, make_client
from data_plane.recording.shipper import Shipper
from data_plane.transport import UpstreamTransport

if TYPE_CHECKING:
    from aibridge.workers import Worker

log = get_logger(__name__)


def make_upstream() -> UpstreamTransport:
    """The one transport to every upstream: HTTP/1.1 keep-alive, HTTP/2 where an https
    upstream offers h2, and proxies from the environment (HTTPS_PROXY, NO_PROXY...) as
    httpx applies them with trust_env."""
    return UpstreamTransport(
        max_connections=MAX_CONNECTIONS,
        max_keepalive=MAX_KEEPALIVE,
        keepalive_expiry=KEEPALIVE_EXPIRY,
        trust_env=True,
    )


def make_http_client(upstream: UpstreamTransport) -> httpx.AsyncClient:
    """An httpx client on `upstream` (for the Bedrock client). Cookies are never stored:
    the client is shared by every user of the bridge."""
    return make_client(trust_env=True, transport=upstream)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Signals are the Bridge's (`Bridge.start`): uvicorn's handler re-raises SIGTERM as
        # soon as the server stops, which ends the process before the records are flushed.
        yield

    def on_signal(self) -> None:
        """SIGINT/SIGTERM: stop serving (graceful); a second one stops at once."""
        self.force_exit = self.should_exit
        self.should_exit = True


class Bridge:
    """aibridged in one object: `await start()`, `url`, `await stop()`."""

    def __init__(
        self,
        settings: BridgeSettings,
        *,
        bedrock_factory: BedrockFactory | Literal["auto"] | None = "auto",
        handle_signals: bool = False,
        telemetry: Telemetry | None = None,
        sink: RecordSink | None = None,
        worker: Worker | None = None,
    ) -> None:
        self.settings = settings
        self.worker = worker
        self.upstream = make_upstream()
        self.http = make_http_client(self.upstream)
        self.metrics = BridgeMetrics(worker.identity if worker else None)
        self.subscriber = make_subscriber(
            settings, settings.bridge_token, self.apply, self.metrics.follow
        )
        # Records go to the config service on the subscriber's connection settings, unless
        # the caller (a test) takes them itself or recording is off.
        self.shipper = (
            Shipper(settings.recording, self.subscriber.config, self.metrics.recording)
            if sink is None and settings.recording_on
            else None
        )
        # `telemetry`: providers a test built; else as the OTEL_* settings say (None: off).
        self.telemetry = telemetry or start_telemetry(settings.telemetry, settings.node_id)
        self.app = self._app(sink if self.shipper is None else self.shipper)
        self.context = BuildContext(
            allow_byok=settings.allow_byok,
            breaker=settings.breaker,
            http=self.http,
            bedrock_factory=(
                load_factory(settings.aws_region) if bedrock_factory == "auto" else bedrock_factory
            ),
            on_key_transition=self.metrics.on_key_transition,
            on_breaker_change=self.metrics.on_breaker_change,
        )
        self.guard = ConnectionGuard(settings.limits, self.metrics.connections_closed)
        self.server = _Server(self._server_config())
        self._handle_signals = handle_signals
        self.port = settings.listen_port
        self._tasks: list[asyncio.Task[None]] = []

    def _app(self, sink: RecordSink | None) -> BridgeApp:
        """The ASGI app, with its tracing when telemetry is on."""
        settings = self.settings
        tracing = None
        if self.telemetry is not None:
            from data_plane.bridge.tracing import BridgeTelemetry  # only when it is on

            tracing = BridgeTelemetry(self.telemetry)
        return BridgeApp(
            telemetry=tracing,
            http=self.http,
            upstream=self.upstream,
            metrics=self.metrics,
            dumper=Dumper(settings.dump_dir) if settings.dump_dir else None,
            body_budget=BodyBudget(settings.body_buffer_bytes, settings.body_timeout),
            sink=sink,
            record_prompts=settings.record_prompts,
        )

    def _server_config(self) -> uvicorn.Config:
        """uvicorn serving the app through the bridge's own guarded protocol."""
        return uvicorn.Config(
            self.app,
            host=self.settings.listen_host,
            port=self.settings.listen_port,
            http=self.guard.protocol(),
            ws="none",
            lifespan="off",
            access_log=False,
            # The bridge reads no client address or scheme: no X-Forwarded-* rewriting
            # middleware between the protocol and the app.
            proxy_headers=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=10,
        )

    async def apply(self, snapshot: cs.ProviderSnapshot) -> list[cs.ProviderError]:
        """Build the snapshot's routing table and swap it in (one assignment)."""
        table, errors = build_table(snapshot, self.app.table, self.context)
        self.app.table = table
        snapshot_applied(
            log, self.metrics, table, providers=len(table.providers), failed=len(errors)
        )
        return errors

    @property
    def url(self) -> str:
        host = self.settings.listen_host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def start(self) -> None:
        # Bound first: a port that is taken fails before anything else starts.
        s = self.settings
        sock = bind_tcp(
            "AIBRIDGE_BRIDGE_LISTEN", s.listen_host, s.listen_port, reuse_port=bool(self.worker)
        )
        self.port = sock.getsockname()[1]
        try:
            if self.shipper is not None:
                await self.shipper.start()
            self._tasks.append(await start_following(self.subscriber))
            if self.worker is not None:
                await self.worker.first_snapshot(self.subscriber.applied)
        except BaseException:
            sock.close()
            if self.shipper is not None:
                await self.shipper.close()
            raise
        if self._handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.server.on_signal)
        self._tasks.append(asyncio.create_task(self.server.serve(sockets=[sock]), name="http"))
        while not self.server.started:
            if self._tasks[-1].done():
                self._tasks[-1].result()  # raises what stopped uvicorn
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.005)
        if self.shipper is None and self.app.sink is None:
            log.warning("interception recording is off (AIBRIDGE_RECORDING=false)")
        log.info(
            "bridge listening",
            url=self.url,
            max_connections=self.guard.max_connections,
            config_service=self.settings.config_service,
            node_id=self.settings.node_id,
        )
        if self.worker is not None:
            self.worker.ready()

    async def wait(self) -> None:
        """Until the HTTP server stops (a signal when handle_signals is on)."""
        await self._tasks[-1]

    async def stop(self) -> None:
        self.server.should_exit = True
        for task in reversed(self._tasks):
            if task.get_name() == "subscriber":
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        # After the HTTP server: the requests it finished have submitted their records.
        if self.shipper is not None:
            await self.shipper.close()
        await self.http.aclose()
        if self.telemetry is not None:
            await asyncio.to_thread(self.telemetry.shutdown)


async def serve(settings: BridgeSettings, worker: Worker | None = None) -> None:
    """Run aibridged (or one worker of it) until SIGINT/SIGTERM."""
    bridge = Bridge(settings, handle_signals=True, worker=worker)
    await bridge.start()
    tune_collector()
    try:
        await bridge.wait()
    finally:
        await bridge.stop()
