"""Assemble and run the config service: migrate, seed, bootstrap, serve gRPC.

`start(settings, environ)` returns a running service (tests use it in-process on
port 0); `serve(settings, environ)` runs until SIGINT/SIGTERM and stops gracefully:
health goes NOT_SERVING first, then the server stops with a grace period.

With `--workers N` (aibridge/workers.py) the parent runs `prepare` once (migrate, seed,
bootstrap) and each worker runs `serve_worker`: a whole replica (its own hub, registry,
replica id `<id>-w<i>`, health and reflection) on the shared port (SO_REUSEPORT), that
neither migrates nor seeds. Workers keep in step as replicas do: PostgreSQL's NOTIFY, or
on SQLite the local change signal (local_signal.py); each publishes its streams to the
shared subscriber table (on SQLite too), so ListSubscribers on any worker lists all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from aibridge.collector import tune_collector
from aibridge.config.v1 import config_service_pb2
from aibridge.logs import get_logger
from aibridge.ports import ListenError, check_free
from aibridge.telemetry import Telemetry
from aibridge.telemetry import start as start_telemetry
from aibridge.workers import Worker
from config_service import local_signal, notify
from config_service.auth import Authenticator
from config_service.crypto import Cipher
from config_service.db import migrate
from config_service.db.engine import make_engine
from config_service.metrics import ConfigMetrics
from config_service.rbac import Role
from config_service.seed import apply as seed_apply
from config_service.seed.env import parse_env
from config_service.servicers.config import ConfigServicer
from config_service.servicers.edge import AuthenticateFirst, MalformedRequests
from config_service.settings import METRICS_LISTEN, ConfigServiceSettings
from config_service.snapshots.hub import SnapshotHub
from config_service.store import subscriber_status, tokens, usage
from config_service.store.database import Database
from config_service.subscribers import SubscriberRegistry

if TYPE_CHECKING:
    from config_service.tracing import ConfigTelemetry

log = get_logger("aibridge.config")

# The public asyncio servicer (grpc-stubs does not declare the `aio` submodule).
HealthServicer: Any = health.aio.HealthServicer  # type: ignore[attr-defined]

SERVICE_NAMES = (
    "aibridge.config.v1.ConfigService",
    "aibridge.config.v1.ProviderAdminService",
    "aibridge.config.v1.TokenAdminService",
    "aibridge.config.v1.UsageService",
)
_REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
LISTEN_SETTING = "AIBRIDGE_GRPC_LISTEN"
# After the server stopped: how long its RPC tasks may take to notice (see serve).
RPC_TASKS_GRACE = 2.0

# Thousands of long-lived watch streams: many streams per connection, keepalive to
# notice dead peers, and clients allowed to ping while idle.
GRPC_OPTIONS = [
    ("grpc.max_concurrent_streams", 100_000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    # A burst of new streams (every daemon reconnecting after a restart) waits in
    # grpc-core's pending-request queue until the Python loop picks each one up; past
    # the default limits (1000 soft / 3000 hard) core cancels them outright.
    ("grpc.server.max_pending_requests", 100_000),
    ("grpc.server.max_pending_requests_hard_limit", 100_000),
]
MAX_CONCURRENT_RPCS = 50_000


def grpc_options(reuse_port: bool) -> list[tuple[str, int]]:
    """The server's options; `reuse_port` for a worker sharing the port with its siblings
    (a single process refuses a port another process holds)."""
    return [*GRPC_OPTIONS, ("grpc.so_reuseport", int(reuse_port))]


@dataclass
class RunningService:
    settings: ConfigServiceSettings
    server: grpc.aio.Server
    port: int
    db: Database
    hub: SnapshotHub
    health: HealthServicer
    registry: SubscriberRegistry
    metrics: ConfigMetrics
    metrics_port: int | None = None
    metrics_server: Any = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stopped: bool = False
    telemetry: Telemetry | None = None
    signal: local_signal.LocalSignal | None = None
    config: ConfigServicer | None = None  # WatchProviders' streams (tests look at them)

    @property
    def target(self) -> str:
        return f"{self.settings.grpc_host}:{self.port}"

    async def stop(self, grace: float = 5.0) -> None:
        if self.stopped:
            return
        self.stopped = True
        await self.health.enter_graceful_shutdown()
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            # Bounded: a task stuck in a database call must not hold the shutdown.
            await asyncio.wait(self.tasks, timeout=5)
        await self.server.stop(grace)
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()  # shutdown() stops serving; this frees the socket
        await self.db.close()
        if self.signal is not None:
            self.signal.close()
        if self.telemetry is not None:
            await asyncio.to_thread(self.telemetry.shutdown)


def _credentials(settings: ConfigServiceSettings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    client_ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _add_port(
    server: grpc.aio.Server,
    settings: ConfigServiceSettings,
    credentials: grpc.ServerCredentials | None,
    reuse_port: bool,
) -> int:
    """Bind the gRPC port; `ListenError` (one line, naming the setting) when it cannot be."""
    host, port = settings.grpc_host, settings.grpc_port
    # Probed first for the reason (grpc-core only says "failed to bind", after a log line).
    check_free(LISTEN_SETTING, host, port, reuse_port=reuse_port)
    address = settings.grpc_target
    try:
        if credentials is not None:
            return server.add_secure_port(address, credentials)
        return server.add_insecure_port(address)
    except RuntimeError:
        raise ListenError(LISTEN_SETTING, host, port, "grpc could not bind it") from None


def _reflection_v1_descriptor() -> None:
    """Put grpc/reflection/v1/reflection.proto in the default descriptor pool, once.

    grpcio-reflection ships only the v1alpha file; v1 is the same messages under another
    package. Without the v1 file a client that asks v1 (buf curl does, first) for the
    service it is talking to gets "failed to find service named ... in schema".
    """
    pool = descriptor_pool.Default()
    name = "grpc/reflection/v1/reflection.proto"
    try:
        pool.FindFileByName(name)
        return
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    old, new = f".{file.package}.", f".{_REFLECTION_V1.rpartition('.')[0]}."
    file.name, file.package = name, new.strip(".")
    file.ClearField("options")  # v1alpha's: deprecated, its java/go packages
    for message in file.message_type:
        for fld in message.field:
            if fld.HasField("type_name"):
                fld.type_name = fld.type_name.replace(old, new)
    for method in file.service[0].method:
        method.input_type = method.input_type.replace(old, new)
        method.output_type = method.output_type.replace(old, new)
    pool.Add(file)


def _add_reflection(server: grpc.aio.Server) -> None:
    """Reflection v1alpha and v1; every service listed is described by the pool."""
    _reflection_v1_descriptor()
    names = (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME, _REFLECTION_V1)
    reflection.enable_server_reflection(names, server)
    # v1 has the same messages on the wire, so the same servicer answers it.
    servicer = reflection.aio.ReflectionServicer(names)  # type: ignore[attr-defined]
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                _REFLECTION_V1,
                {
                    "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                        servicer.ServerReflectionInfo,
                        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
                    )
                },
            ),
        )
    )


def open_database(settings: ConfigServiceSettings) -> Database:
    """The database, as it is (a worker's: the parent prepared it)."""
    return Database(make_engine(settings.database_url), Cipher(settings.encryption_keys))


def prepare_database(settings: ConfigServiceSettings, environ: Mapping[str, str]) -> Database:
    """Migrate, seed from the environment and bootstrap tokens (blocking; run in a thread)."""
    db = open_database(settings)
    if not db.cipher.enabled:
        log.warning(
            "AIBRIDGE_ENCRYPTION_KEYS is not set: provider secrets are stored UNENCRYPTED "
            "in the database; set it (openssl rand -base64 32) for production"
        )
    try:
        _migrate_seed_bootstrap(db, settings, environ)
    except BaseException:
        db.engine.dispose()  # a refused start-up (bad env, seed conflict) leaves nothing open
        raise
    return db


def _migrate_seed_bootstrap(
    db: Database, settings: ConfigServiceSettings, environ: Mapping[str, str]
) -> None:
    before, after = migrate.upgrade(db.engine)
    if before != after:
        log.info("database migrated", from_revision=before, to_revision=after)
    plan = parse_env(environ)
    if plan.note:
        log.info(plan.note)
    for warning in plan.warnings:
        log.warning(warning)
    outcome = seed_apply.apply(db, plan)
    for name in outcome.created:
        log.info("seeded provider from environment", provider=name)
    for name in outcome.skipped_deleted:
        log.warning("not seeding provider: it was deleted through the API", provider=name)
    for sentence in outcome.keys_kept:
        log.warning(sentence)
    for change in tokens.bootstrap(
        db,
        {
            Role.OWNER: settings.admin_token.value,
            Role.BRIDGE: settings.bridge_token.value,
            Role.PROXY: settings.proxy_token.value,
        },
    ):
        log.info(change)


# Replicas publish their subscribers when they change (at most once a second) and at
# least every heartbeat; a replica silent for longer than the freshness window is gone.
STATUS_HEARTBEAT = 5.0
STATUS_FRESHNESS = timedelta(seconds=20)


async def _publish_subscribers(db: Database, registry: SubscriberRegistry, replica: str) -> None:
    published, last = -1, 0.0
    try:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if registry.changes == published and now - last < STATUS_HEARTBEAT:
                continue
            changes = registry.changes
            try:
                await db.call(subscriber_status.publish, db, replica, registry.all())
            except Exception as exc:
                log.warning("could not publish subscriber status", error=str(exc))
                continue
            published, last = changes, now
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await asyncio.to_thread(subscriber_status.forget, db, replica)


# While the database is unreachable it is probed this often (at most), so a replica
# serves again about as soon as the database answers.
UNREACHABLE_RECHECK = 0.5


async def _resync_loop(hub: SnapshotHub, interval: float, metrics: ConfigMetrics) -> None:
    """Safety net: catch changes made by other processes whose notification was missed.

    Also the database probe behind health: every check records whether the database
    answered (`hub.reachable`)."""
    while True:
        if hub.reachable:
            # The periodic check; at once when a database call failed elsewhere.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await hub.wait_unreachable()
        else:
            await asyncio.sleep(min(interval, UNREACHABLE_RECHECK))
        try:
            if await hub.refresh_if_behind():
                metrics.resyncs.labels(reason="periodic").inc()
        except Exception as exc:
            log.warning("revision check failed", error=str(exc))


PRUNE_BATCH = 5000


async def _prune_usage(
    db: Database, retention: float, interval: float, metrics: ConfigMetrics
) -> None:
    """Delete records older than the retention, a batch per transaction, every interval.

    Batches keep each transaction (and its locks) short while the bridge keeps writing;
    on PostgreSQL one replica at a time prunes (`usage.prune` answers None to the others).
    """
    while True:
        cutoff = datetime.now(UTC) - timedelta(seconds=retention)
        removed = 0
        try:
            while (count := await db.call(usage.prune, db, cutoff, PRUNE_BATCH)) is not None:
                removed += count
                if count < PRUNE_BATCH:
                    break
        except Exception as exc:
            log.warning("could not prune interception records", error=str(exc))
        if removed:
            metrics.usage_pruned.inc(removed)
            log.info("pruned interception records", removed=removed, before=cutoff.isoformat())
        await asyncio.sleep(interval)


async def _follow_reachability(hub: SnapshotHub, health: HealthServicer) -> None:
    """Health says NOT_SERVING while the database is unreachable, SERVING again after."""
    serving = True
    while True:
        if hub.reachable != serving:
            serving = hub.reachable
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if serving
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in ("", *SERVICE_NAMES):
                await health.set(name, status)
        await hub.changed()


def _grpc_server(
    settings: ConfigServiceSettings, edge: AuthenticateFirst, reuse_port: bool
) -> tuple[grpc.aio.Server, Telemetry | None, ConfigTelemetry | None]:
    """The gRPC server with its interceptors, and telemetry when it is on."""
    telemetry = start_telemetry(settings.telemetry, settings.replica_id)
    tracing = None
    interceptors: list[grpc.aio.ServerInterceptor] = [edge, MalformedRequests()]  # type: ignore[type-arg]
    if telemetry is not None:
        from config_service.tracing import ConfigTelemetry  # only when it is on

        tracing = ConfigTelemetry(telemetry)
        interceptors.insert(0, tracing.interceptor())
    server = grpc.aio.server(
        options=grpc_options(reuse_port),
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
        interceptors=interceptors,
    )
    return server, telemetry, tracing


async def _hub(
    db: Database,
    settings: ConfigServiceSettings,
    tracing: ConfigTelemetry | None,
    worker: Worker | None,
) -> tuple[SnapshotHub, ConfigMetrics, SubscriberRegistry]:
    """The snapshot hub, built once, with the metrics that watch it and the subscribers."""
    hub = SnapshotHub(db, settings.allow_byok)
    hub.tracing = tracing
    metrics = ConfigMetrics(worker.identity if worker is not None else None)
    hub.listeners.append(lambda _revision: metrics.build_seconds.observe(hub.last_build_seconds))
    await hub.refresh()
    registry = SubscriberRegistry()
    metrics.watch_live(registry.count_by_role, lambda: hub.revision)
    return hub, metrics, registry


def _add_services(
    server: grpc.aio.Server,
    settings: ConfigServiceSettings,
    db: Database,
    hub: SnapshotHub,
    registry: SubscriberRegistry,
    metrics: ConfigMetrics,
    worker: Worker | None,
    edge: AuthenticateFirst,
) -> tuple[Any, ConfigServicer]:
    """Register every servicer, health and reflection; returns the health servicer and
    the config servicer."""
    auth = Authenticator(hub, db)
    edge.auth = auth  # from now on, calls are refused before their body is read
    remote = None
    if _shares_status(db, worker):

        async def remote() -> list[subscriber_status.RemoteSubscriber]:
            return await db.call(
                subscriber_status.others, db, settings.replica_id, STATUS_FRESHNESS
            )

    config = ConfigServicer(
        hub,
        auth,
        registry,
        settings.replica_id,
        metrics,
        remote,
        max_streams_per_principal=settings.max_watch_streams_per_principal,
    )
    server.add_generic_rpc_handlers((config.handler(),))
    from config_service.servicers import admin

    admin.register(server, db, hub, auth, settings.allow_byok, metrics)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    _add_reflection(server)
    return health_servicer, config


def _shares_status(db: Database, worker: Worker | None) -> bool:
    """Whether this replica publishes its streams to, and lists, the shared subscriber
    table: on PostgreSQL (replicas), and on SQLite when it is one of several workers."""
    return db.is_postgres or worker is not None


def _start_background(running: RunningService, worker: Worker | None) -> None:
    """The loops a running replica keeps: resync, reachability, pruning, NOTIFY or the
    SQLite signal, status."""
    settings, db, hub, metrics = running.settings, running.db, running.hub, running.metrics
    coroutines = [
        _resync_loop(hub, settings.resync_interval, metrics),
        _follow_reachability(hub, running.health),
    ]
    if settings.usage_retention > 0:
        coroutines.append(
            _prune_usage(db, settings.usage_retention, settings.usage_prune_interval, metrics)
        )
    if db.is_postgres:
        coroutines.append(notify.listen(settings.database_url, hub, metrics, settings.replica_id))
    elif (group := local_signal.group_of(settings.database_url)) and local_signal.available():
        try:
            running.signal = change_signal = local_signal.LocalSignal(group)
        except OSError as exc:  # then the periodic revision check alone
            log.warning("no change signal between processes on this database", error=str(exc))
        else:
            hub.after_write.append(change_signal.announce)
            coroutines.append(change_signal.listen(hub, metrics))
    if _shares_status(db, worker):
        coroutines.append(_publish_subscribers(db, running.registry, settings.replica_id))
        if worker is not None:
            coroutines.append(_count_subscribers(running.registry, hub, metrics))
    running.tasks.extend(asyncio.create_task(c) for c in coroutines)


def _log_ready(running: RunningService, tls: bool) -> None:
    settings = running.settings
    log.info(
        "config service ready",
        listen=f"{settings.grpc_host}:{running.port}",
        tls=tls,
        mtls=settings.tls_client_ca_file is not None,
        version=running.hub.version,
        database=running.db.engine.dialect.name,
        metrics=f"{settings.metrics_listen[0]}:{running.metrics_port}"
        if settings.metrics_listen
        else "off",
        replica=settings.replica_id,
    )


async def start(
    settings: ConfigServiceSettings, environ: Mapping[str, str], worker: Worker | None = None
) -> RunningService:
    """A running replica: the whole service, or (`worker`) one of several on one port, on
    a database the parent prepared."""
    # Database calls run in threads; a stalled database can hold some of them until the
    # call deadline, so keep enough workers for the rest (the default is cores + 4).
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=64, thread_name_prefix="aibridge-db")
    )
    # Bound first: a port that is taken fails before the database is migrated or seeded.
    edge = AuthenticateFirst()
    server, telemetry, tracing = _grpc_server(settings, edge, reuse_port=worker is not None)
    try:
        credentials = _credentials(settings)
        port = _add_port(server, settings, credentials, reuse_port=worker is not None)
        if settings.metrics_listen is not None:  # served once ready; a taken one fails now
            check_free(METRICS_LISTEN.env, *settings.metrics_listen, reuse_port=worker is not None)
        if worker is None:
            db = await asyncio.to_thread(prepare_database, settings, environ)
        else:
            db = open_database(settings)
    except BaseException:
        await server.stop(None)
        if telemetry is not None:
            await asyncio.to_thread(telemetry.shutdown)
        raise
    hub, metrics, registry = await _hub(db, settings, tracing, worker)
    health_servicer, config = _add_services(
        server, settings, db, hub, registry, metrics, worker, edge
    )
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    running = RunningService(settings, server, port, db, hub, health_servicer, registry, metrics)
    running.config = config
    running.telemetry = telemetry
    _start_background(running, worker)
    if settings.metrics_listen is not None:
        running.metrics_server, running.metrics_port = metrics.serve(
            *settings.metrics_listen, reuse_port=worker is not None
        )
    _log_ready(running, tls=credentials is not None)
    return running


async def serve(
    settings: ConfigServiceSettings, environ: Mapping[str, str], worker: Worker | None = None
) -> None:
    running = await start(settings, environ, worker)
    tune_collector()
    if worker is not None:
        worker.ready()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: health NOT_SERVING, draining")
    await running.stop(grace=5.0)
    await _let_rpc_tasks_finish()


class StartupRefused(Exception):
    """Seeding refused the environment (its message lists why), in a supervising parent."""


def prepare(settings: ConfigServiceSettings) -> None:
    """`--workers N`: migrate, seed and bootstrap once, in the parent, before any worker."""
    from config_service.seed.apply import SeedConflict
    from config_service.seed.env import SeedConfigError

    try:
        prepare_database(settings, os.environ).engine.dispose()
    except (SeedConflict, SeedConfigError) as exc:
        problems = "\n".join(f"  - {problem}" for problem in exc.problems)
        raise StartupRefused(
            f"seeding providers from the environment failed:\n{problems}"
        ) from None


async def serve_worker(settings: ConfigServiceSettings, worker: Worker | None) -> None:
    """One worker of `aibridge config-service --workers N` (the parent ran `prepare`)."""
    await serve(settings, os.environ, worker)


async def _count_subscribers(
    registry: SubscriberRegistry, hub: SnapshotHub, metrics: ConfigMetrics
) -> None:
    """A worker's open streams and revision into the merged gauges, every second."""
    while True:
        metrics.set_live(registry.count_by_role(), hub.revision)
        await asyncio.sleep(1.0)


async def _let_rpc_tasks_finish() -> None:
    """Wait (bounded) for grpc's per-RPC tasks to see their calls end.

    The server can report itself stopped while the tasks that watched its last streams
    have not yet run; the event loop cancels what is left when `serve` returns, and grpc
    logs each task cancelled that way as an unhandled CancelledError with a traceback.
    """
    current = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not current]
    if pending:
        await asyncio.wait(pending, timeout=RPC_TASKS_GRACE)


__all__ = ["RunningService", "config_service_pb2", "serve", "start"]
