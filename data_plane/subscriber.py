"""Follows the config service's snapshot stream: WatchProviders → apply → ReportStatus.

Shared by the bridge and proxy daemons. The daemon gives an async `apply(snapshot)`
returning the providers it had to leave out; the subscriber reports an ACK with those
errors, or a NACK when `apply` raises. On any stream failure it reconnects with jittered
exponential backoff (about 50 ms doubling to 1 s, reset once a snapshot arrives; up to 10 s
when the service refused the subscriber: token, role, limit) and resumes with
`known_version`, so the daemon keeps serving its last good snapshot for as long as the
config service is away. The gRPC channel's own reconnect backoff is capped at 1 s too, so
the two never stack to seconds of lag after an outage. With a cache file, the last good
snapshot survives a restart too (`load_cache()` before `run()`).

Versions never go backwards for a daemon within the database's history, whatever the
server sends (a stale replica, a reconnect elsewhere): a snapshot older than the applied
one of the same history, or with a malformed version, is refused, reported (NACK) and
the stream dropped, so the next attempt can land on a replica that is up to date. A
snapshot of another history (the database was restored from an older backup, and the
config service started a new history) is taken whatever its version: the restored
state is the truth now, revocations made since included.

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
from aibridge.versions import parse_version
from data_plane import snapshot_cache

log = get_logger(__name__)

ApplyFn = Callable[[cs.ProviderSnapshot], Awaitable[list[cs.ProviderError]]]
REPORT_TIMEOUT = 5.0
# Retrying these fast does not help: the service refused this subscriber itself.
_REFUSED = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
    }
)


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
    backoff_max: float = 1.0  # transient failures (service away, stale replica)
    refused_backoff_max: float = 10.0  # the service refused the subscriber (see _REFUSED)


@dataclass
class SubscriberState:
    """What /readyz and the metrics show about the subscription."""

    applied_version: str = ""
    applied_history: str = ""
    snapshot: cs.ProviderSnapshot | None = None
    connected: bool = False
    from_cache: bool = False
    last_attempt: float | None = None  # unix time of the last apply attempt
    last_success: float | None = None
    last_error: str = ""
    reconnects: int = 0


def bearer(token: Secret) -> tuple[tuple[str, str], ...]:
    """The call metadata that presents the daemon's token to the config service."""
    return (("authorization", f"Bearer {token.value}"),)


def make_channel(config: SubscriberConfig) -> grpc.aio.Channel:
    target = config.target.removeprefix("https://").removeprefix("http://")
    # Reconnect quickly after a config-service restart (gRPC's default starts at 1 s and
    # grows to 120 s): a daemon is back about a second after the service, however long
    # the outage was.
    options = [
        ("grpc.initial_reconnect_backoff_ms", 50),
        ("grpc.min_reconnect_backoff_ms", 50),
        ("grpc.max_reconnect_backoff_ms", 1_000),
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
        self._metadata = bearer(config.token)
        self.applied = asyncio.Event()  # set once any snapshot has been applied

    async def load_cache(self) -> bool:
        """Apply the cached last-good snapshot, if any; True when one was applied."""
        path = self.config.cache_file
        if path is None:
            return False
        snapshot = await asyncio.to_thread(snapshot_cache.load, path)
        if snapshot is None:
            return False
        refusal = self._refusal(snapshot)
        if refusal is not None:
            log.warning("cached snapshot ignored", path=str(path), reason=refusal)
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
        cap = self.config.backoff_max
        async with make_channel(self.config) as channel:
            stub = cs_grpc.ConfigServiceStub(channel)
            while True:
                try:
                    request = cs.WatchProvidersRequest(
                        node_id=self.config.node_id,
                        known_version=self.state.applied_version,
                        known_history=self.state.applied_history,
                    )
                    # wait_for_ready: while the channel is reconnecting (its own 50 ms..1 s
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
                        if not await self._handle(stub, response.snapshot):
                            call.cancel()
                            break
                        delay, cap = self.config.backoff_initial, self.config.backoff_max
                    else:
                        log.warning("config service ended the snapshot stream")
                except grpc.aio.AioRpcError as exc:
                    refused = exc.code() in _REFUSED
                    cap = self.config.refused_backoff_max if refused else self.config.backoff_max
                    delay = min(delay, cap)
                    level = log.error if refused else log.warning
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
                delay = min(delay * 2, cap)

    def _applied(self, snapshot: cs.ProviderSnapshot) -> None:
        if self.state.applied_version and snapshot.history != self.state.applied_history:
            log.warning(
                "the config service's database is in a new history (restored from a "
                "backup?): its snapshot replaces ours, whatever the versions",
                version=snapshot.version,
                previous_version=self.state.applied_version,
            )
        self.state.applied_version = snapshot.version
        self.state.applied_history = snapshot.history
        self.state.snapshot = snapshot
        self.state.last_success = time.time()
        self.applied.set()

    def _refusal(self, snapshot: cs.ProviderSnapshot) -> str | None:
        """Why `snapshot` must not be applied; None when it may be."""
        version = snapshot.version
        revision = parse_version(version)
        if revision is None:
            return f"malformed snapshot version {version[:40]!r}: not a decimal revision"
        applied = parse_version(self.state.applied_version)
        same_history = snapshot.history == self.state.applied_history
        if applied is not None and same_history and revision < applied:
            return (
                f"snapshot version {revision} is older than the applied version {applied}; "
                "versions never go backwards"
            )
        return None

    async def _handle(
        self, stub: cs_grpc.ConfigServiceAsyncStub, snapshot: cs.ProviderSnapshot
    ) -> bool:
        """Apply one snapshot and report it; False when the stream must be dropped."""
        refusal = self._refusal(snapshot)
        if refusal is not None:
            self.state.last_error = refusal
            log.error(
                "snapshot refused; reconnecting",
                target=self.config.target,
                applied_version=self.state.applied_version,
                reason=refusal,
            )
            await self._nack(stub, snapshot.version)
            return False
        now = self.state.last_attempt = time.time()
        if self._on_attempt is not None:
            self._on_attempt(now)
        try:
            errors = await self._apply(snapshot)
        except Exception as exc:
            self.state.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("snapshot rejected", version=snapshot.version)
            await self._nack(stub, snapshot.version)
            return True
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
        return True

    async def _nack(self, stub: cs_grpc.ConfigServiceAsyncStub, version: str) -> None:
        await self._report(
            stub,
            cs.ReportStatusRequest(
                node_id=self.config.node_id,
                version=version,
                applied=False,
                error_detail=self.state.last_error,
            ),
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
