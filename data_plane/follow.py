"""What both daemons do to follow the config service's snapshot, in one place.

`FollowMetrics`: the snapshot series every daemon exports under its own prefix
(`<prefix>snapshot_version_info`, `<prefix>provider_info`,
`<prefix>providers_last_reload_timestamp_seconds` and `..._success_...`).

`make_subscriber(settings, token, apply, metrics)` builds the daemon's `Subscriber` from
its settings (config service address, TLS/mTLS files, snapshot cache, node id), and
`start_following(subscriber)` serves the cached snapshot, if any, then follows the stream
in a task named "subscriber" (cancel it to stop). `snapshot_applied(...)` records a table
swapped in: in the daemon's metrics and as one "snapshot applied" log line.

With `--workers N` (aibridge/workers.py) each worker is a whole daemon: its own
subscriber, following the config service as node `<node id>-w<i>` and reporting its own
version (`aibridge subscribers` lists every worker). One subscriber in the parent, handing
snapshots to the workers, was the other way; it was not taken because the workers would
then need a second, private channel for snapshots (carrying plaintext keys in the
bridge's case) whose delivery and ordering nobody reports: with a subscriber each, the
config service sees which worker applied which version, a revoked token is gone from a
worker exactly when that worker ACKs the version that dropped it, and a worker that
cannot apply a snapshot NACKs it itself. The cost is one stream per worker at the config
service (a few KB each).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sized
from collections.abc import Set as AbstractSet
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Gauge

from aibridge.masking import Secret
from aibridge.series import Series
from data_plane.daemon import DaemonSettings
from data_plane.subscriber import ApplyFn, Subscriber, SubscriberConfig


class FollowMetrics:
    """The snapshot-following series of one daemon, in that daemon's registry.

    With several workers each worker shows its own (multiprocess mode `liveall`: a pid
    label per worker), so a scrape shows which worker is on which version.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        prefix: str,
        *,
        provider_help: str = "Providers of the applied snapshot.",
    ) -> None:
        m = Series(registry, prefix)
        self.snapshot_version = m.gauge(
            "snapshot_version_info",
            "The applied snapshot version (value 1).",
            ("version",),
            mode="liveall",
        )
        self.provider_info = m.gauge(
            "provider_info",
            provider_help,
            ("provider_name", "provider_type", "status"),
            mode="liveall",
        )
        self.last_reload = m.gauge(
            "providers_last_reload_timestamp_seconds",
            "Last snapshot application attempt.",
            mode="liveall",
        )
        self.last_reload_success = m.gauge(
            "providers_last_reload_success_timestamp_seconds",
            "Last successful snapshot application.",
            mode="liveall",
        )
        self._version = ""
        self._providers: set[tuple[str, str, str]] = set()

    def attempted(self, when: float) -> None:
        """A snapshot is about to be applied (the subscriber's `on_attempt`)."""
        self.last_reload.set(when)

    def applied(self, version: str, providers: Iterable[tuple[str, str, str]], when: float) -> None:
        """A snapshot was applied; `providers` are its (name, type, status) triples."""
        _replace(self.snapshot_version, {(self._version,)} - {("",)}, {(version,)})
        self._version = version
        shown = set(providers)
        _replace(self.provider_info, self._providers, shown)
        self._providers = shown
        self.last_reload_success.set(when)


Labels = AbstractSet[tuple[str, ...]]


def _replace(gauge: Gauge, old: Labels, new: Labels) -> None:
    """An info gauge's series become `new`: gone ones set to 0, then removed (a worker's
    memory-mapped value outlives the removal; the merged scrape drops 0s of info gauges)."""
    for labels in old - new:
        gauge.labels(*labels).set(0)
        gauge.remove(*labels)
    for labels in new:
        gauge.labels(*labels).set(1)


def make_subscriber(
    settings: DaemonSettings, token: Secret, apply: ApplyFn, metrics: FollowMetrics
) -> Subscriber:
    """The daemon's subscriber; every apply attempt is recorded in `metrics`."""
    return Subscriber(
        SubscriberConfig(
            target=settings.config_service,
            token=token,
            node_id=settings.node_id,
            ca_file=settings.config_service_ca_file,
            cert_file=settings.config_service_cert_file,
            key_file=settings.config_service_key_file,
            cache_file=settings.snapshot_cache,
        ),
        apply,
        on_attempt=metrics.attempted,
    )


async def start_following(subscriber: Subscriber) -> asyncio.Task[None]:
    """Apply the cached snapshot (if any), then follow the stream in a new task."""
    await subscriber.load_cache()
    return asyncio.create_task(subscriber.run(), name="subscriber")


class Table(Protocol):
    """What both daemons' tables of an applied snapshot have."""

    @property
    def version(self) -> str: ...
    @property
    def tokens(self) -> Sized: ...


T = TypeVar("T", bound=Table)
T_contra = TypeVar("T_contra", bound=Table, contravariant=True)


class SnapshotMetrics(Protocol[T_contra]):
    def snapshot_applied(self, table: T_contra, when: float) -> None: ...


def snapshot_applied(log: Any, metrics: SnapshotMetrics[T], table: T, **counts: object) -> None:
    """`table` was swapped in: the daemon's metrics say so, and one line logs its version,
    its gateway tokens and the daemon's own `counts`."""
    metrics.snapshot_applied(table, time.time())
    log.info("snapshot applied", version=table.version, tokens=len(table.tokens), **counts)
