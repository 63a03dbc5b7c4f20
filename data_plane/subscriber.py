"""Follows the config service's snapshot stream: WatchProviders → apply → ReportStatus.

Shared by the bridge and proxy daemons. The daemon gives an async `apply(snapshot)`
returning the providers it had to leave out; the subscriber reports an ACK with those
errors, or a NACK when `apply` raises. On any stream failure it reconnects with jittered
exponential backoff (about 50 ms doubling to 10 s, reset once a snapshot arrives) and
resumes with `known_version`, so the daemon keeps serving its last good snapshot for as
long as the config service is away. With a cache file, the last good snapshot survives a
restart too (`load_cache()` before `run()`).

    sub = Subscriber(SubscriberConfig(target=..., token=Secret(...), node_id=...), apply)
    await sub.load_cache()
    task = asyncio.create_task(sub.run())   # cancel the task to stop
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import config_service_pb2_grpc as cs_grpc
from aibridge.limits import MAX_REPORT_TEXT
from aibridge.logs import get_logger
from aibridge.masking import Secret
from data_plane import snapshot_cache

log = get_logger(__name__)

ApplyFn = Callable[[cs.ProviderSnapshot], Awaitable[list[cs.ProviderError]]]
REPORT_TIMEOUT = 5.0


@dataclass(frozen=True)
class SubscriberConfig:
    target: str  # host:port of the config service
    token: Secret
    node_id: str
    ca_file: Path | None = None  # TLS when set
    cert_file: Path | None = None  # client certificate (mTLS)
    key_file: Path | None = None
    cache_file: Path | None = None
    backoff_initial: float = 0.05
    backoff_max: float = 10.0


@dataclass
class SubscriberState:
    """What /readyz and the metrics show about the subscription."""

    applied_version: str = ""
    snapshot: cs.ProviderSnapshot | None = None
    connected: bool = False
    from_cache: bool = False
    last_attempt: float | None = None  # unix time of the last apply attempt
    last_success: float | None = None
    last_error: str = ""
    reconnects: int = 0


def make_channel(config: SubscriberConfig) -> grpc.aio.Channel:
    target = config.target.removeprefix("https://").removeprefix("http://")
    # Reconnect quickly after a config-service restart (gRPC's default starts at 1 s).
    options = [
        ("grpc.initial_reconnect_backoff_ms", 50),
        ("grpc.min_reconnect_backoff_ms", 50),
        ("grpc.max_reconnect_backoff_ms", 10_000),
        ("grpc.keepalive_time_ms", 300_000),
    ]
    if config.ca_file is None:
        return grpc.aio.insecure_channel(target, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=config.ca_file.read_bytes(),
        private_key=config.key_file.read_bytes() if config.key_file else None,
        certificate_chain=config.cert_file.read_bytes() if config.cert_file else None,
    )
    return grpc.aio.secure_channel(target, credentials, options=options)


class Subscriber:
    def __init__(
        self,
        config: SubscriberConfig,
        apply: ApplyFn,
        *,
        on_attempt: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self._apply = apply
        self._on_attempt = on_attempt
        self.state = SubscriberState()
        self._metadata = (("authorization", f"Bearer {config.token.value}"),)
        self.applied = asyncio.Event()  # set once any snapshot has been applied

    async def load_cache(self) -> bool:
        """Apply the cached last-good snapshot, if any; True when one was applied."""
        path = self.config.cache_file
        if path is None:
            return False
        snapshot = await asyncio.to_thread(snapshot_cache.load, path)
        if snapshot is None:
            return False
        try:
            await self._apply(snapshot)
        except Exception as exc:
            log.warning(
                "cached snapshot could not be applied", version=snapshot.version, error=str(exc)
            )
            return False
        self._applied(snapshot)
        self.state.from_cache = True
        log.info(
            "serving the cached snapshot until the config service answers",
            version=snapshot.version,
            path=str(path),
        )
        return True

    async def run(self) -> None:
        """Follow the stream until cancelled."""
        delay = self.config.backoff_initial
        async with make_channel(self.config) as channel:
            stub = cs_grpc.ConfigServiceStub(channel)
            while True:
                try:
                    request = cs.WatchProvidersRequest(
                        node_id=self.config.node_id, known_version=self.state.applied_version
                    )
                    # wait_for_ready: while the channel is reconnecting (its own 50 ms..10 s
                    # backoff) the call waits for it instead of failing at once; failing
                    # fast would double our delay too, and the two backoffs compound
                    # (seconds of lag after the config service is back).
                    call = stub.WatchProviders(
                        request, metadata=self._metadata, wait_for_ready=True
                    )
                    async for response in call:
                        if not self.state.connected:
                            log.info(
                                "following the config service",
                                target=self.config.target,
                                known_version=self.state.applied_version,
                            )
                        self.state.connected = True
                        delay = self.config.backoff_initial
                        await self._handle(stub, response.snapshot)
                    log.warning("config service ended the snapshot stream")
                except grpc.aio.AioRpcError as exc:
                    level = (
                        log.error
                        if exc.code()
                        in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
                        else log.warning
                    )
                    level(
                        "config service stream failed",
                        target=self.config.target,
                        code=exc.code().name,
                        detail=exc.details(),
                        retry_in=round(delay, 3),
                    )
                self.state.connected = False
                self.state.reconnects += 1
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
                delay = min(delay * 2, self.config.backoff_max)

    def _applied(self, snapshot: cs.ProviderSnapshot) -> None:
        self.state.applied_version = snapshot.version
        self.state.snapshot = snapshot
        self.state.last_success = time.time()
        self.applied.set()

    async def _handle(
        self, stub: cs_grpc.ConfigServiceAsyncStub, snapshot: cs.ProviderSnapshot
    ) -> None:
        now = self.state.last_attempt = time.time()
        if self._on_attempt is not None:
            self._on_attempt(now)
        try:
            errors = await self._apply(snapshot)
        except Exception as exc:
            self.state.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("snapshot rejected", version=snapshot.version)
            await self._report(
                stub,
                cs.ReportStatusRequest(
                    node_id=self.config.node_id,
                    version=snapshot.version,
                    applied=False,
                    error_detail=self.state.last_error,
                ),
            )
            return
        self._applied(snapshot)
        self.state.from_cache = False
        self.state.last_error = ""
        await self._report(
            stub,
            cs.ReportStatusRequest(
                node_id=self.config.node_id, version=snapshot.version, applied=True, errors=errors
            ),
        )
        if self.config.cache_file is not None:
            try:
                await asyncio.to_thread(snapshot_cache.save, self.config.cache_file, snapshot)
            except OSError as exc:
                log.warning(
                    "snapshot cache not written", path=str(self.config.cache_file), error=str(exc)
                )

    async def _report(
        self, stub: cs_grpc.ConfigServiceAsyncStub, request: cs.ReportStatusRequest
    ) -> None:
        # The config service rejects a report beyond its bounds: keep diagnostics within.
        request.error_detail = request.error_detail[:MAX_REPORT_TEXT]
        for error in request.errors:
            error.message = error.message[:MAX_REPORT_TEXT]
        try:
            await stub.ReportStatus(request, metadata=self._metadata, timeout=REPORT_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "status report failed",
                version=request.version,
                code=exc.code().name,
                detail=exc.details(),
            )
