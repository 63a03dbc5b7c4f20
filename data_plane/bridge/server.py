"""Wiring of aibridged: the app, the shared HTTP client, the subscriber and uvicorn.

`serve(settings)` runs the daemon until SIGINT/SIGTERM. `Bridge` is the same thing as
an object a test (or `aibridge up`) can start on port 0 and stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Literal

import httpx
import uvicorn

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.logs import get_logger
from aibridge.ports import bind_tcp
from data_plane.body_budget import BodyBudget
from data_plane.bridge.app import BridgeApp
from data_plane.bridge.bedrock_adapter import load_factory
from data_plane.bridge.connections import ConnectionGuard
from data_plane.bridge.metrics import BridgeMetrics
from data_plane.bridge.routing import BuildContext, build_table
from data_plane.bridge.settings import BridgeSettings
from data_plane.bridge.upstream import BedrockFactory
from data_plane.dump import Dumper
from data_plane.follow import make_subscriber, start_following
from data_plane.http_client import KEEPALIVE_EXPIRY, MAX_CONNECTIONS, MAX_KEEPALIVE, make_client
from data_plane.transport import UpstreamTransport

if TYPE_CHECKING:
    from data_plane.workers import Worker

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
    def __init__(self, config: uvicorn.Config, handle_signals: bool) -> None:
        super().__init__(config)
        self._handle_signals = handle_signals

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if self._handle_signals:
            with super().capture_signals():
                yield
        else:
            yield


class Bridge:
    """aibridged in one object: `await start()`, `url`, `await stop()`."""

    def __init__(
        self,
        settings: BridgeSettings,
        *,
        bedrock_factory: BedrockFactory | Literal["auto"] | None = "auto",
        handle_signals: bool = False,
        worker: Worker | None = None,
    ) -> None:
        self.settings = settings
        self.worker = worker
        self.upstream = make_upstream()
        self.http = make_http_client(self.upstream)
        self.metrics = BridgeMetrics(worker.identity if worker else None)
        dumper = Dumper(settings.dump_dir) if settings.dump_dir else None
        self.app = BridgeApp(
            http=self.http,
            upstream=self.upstream,
            metrics=self.metrics,
            dumper=dumper,
            body_budget=BodyBudget(settings.body_buffer_bytes, settings.body_timeout),
        )
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
        self.subscriber = make_subscriber(
            settings, settings.bridge_token, self.apply, self.metrics.follow
        )
        self.guard = ConnectionGuard(settings.limits, self.metrics.connections_closed)
        config = uvicorn.Config(
            self.app,
            host=settings.listen_host,
            port=settings.listen_port,
            http=self.guard.protocol(),
            ws="none",
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=10,
        )
        self.server = _Server(config, handle_signals)
        self.port = settings.listen_port
        self._tasks: list[asyncio.Task[None]] = []

    async def apply(self, snapshot: cs.ProviderSnapshot) -> list[cs.ProviderError]:
        """Build the snapshot's routing table and swap it in (one assignment)."""
        table, errors = build_table(snapshot, self.app.table, self.context)
        self.app.table = table
        self.metrics.snapshot_applied(table, time.time())
        log.info(
            "snapshot applied",
            version=table.version,
            providers=len(table.providers),
            tokens=len(table.tokens),
            failed=len(errors),
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
            self._tasks.append(await start_following(self.subscriber))
            if self.worker is not None:
                await self.worker.first_snapshot(self.subscriber)
        except BaseException:
            sock.close()
            raise
        self._tasks.append(asyncio.create_task(self.server.serve(sockets=[sock]), name="http"))
        while not self.server.started:
            if self._tasks[-1].done():
                self._tasks[-1].result()  # raises what stopped uvicorn
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.005)
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
        await self.http.aclose()


async def serve(settings: BridgeSettings, worker: Worker | None = None) -> None:
    """Run aibridged (or one worker of it) until SIGINT/SIGTERM."""
    bridge = Bridge(settings, handle_signals=True, worker=worker)
    await bridge.start()
    try:
        await bridge.wait()
    finally:
        await bridge.stop()
