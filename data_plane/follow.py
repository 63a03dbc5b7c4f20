"""What both daemons do to follow the config service's snapshot, in one place.

`FollowMetrics`: the snapshot series every daemon exports under its own prefix
(`<prefix>snapshot_version_info`, `<prefix>provider_info`,
`<prefix>providers_last_reload_timestamp_seconds` and `..._success_...`).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Gauge


class FollowMetrics:
    """The snapshot-following series of one daemon, in that daemon's registry."""

    def __init__(
        self,
        registry: CollectorRegistry,
        prefix: str,
        *,
        provider_help: str = "Providers of the applied snapshot.",
    ) -> None:
        self.snapshot_version = Gauge(
            prefix + "snapshot_version_info",
            "The applied snapshot version (value 1).",
            ["version"],
            registry=registry,
        )
        self.provider_info = Gauge(
            prefix + "provider_info",
            provider_help,
            ["provider_name", "provider_type", "status"],
            registry=registry,
        )
        self.last_reload = Gauge(
            prefix + "providers_last_reload_timestamp_seconds",
            "Last snapshot application attempt.",
            registry=registry,
        )
        self.last_reload_success = Gauge(
            prefix + "providers_last_reload_success_timestamp_seconds",
            "Last successful snapshot application.",
            registry=registry,
        )

    def attempted(self, when: float) -> None:
        """A snapshot is about to be applied (the subscriber's `on_attempt`)."""
        self.last_reload.set(when)

    def applied(self, version: str, providers: Iterable[tuple[str, str, str]], when: float) -> None:
        """A snapshot was applied; `providers` are its (name, type, status) triples."""
        self.snapshot_version.clear()
        self.snapshot_version.labels(version).set(1)
        self.provider_info.clear()
        for name, ptype, status in providers:
            self.provider_info.labels(name, ptype, status).set(1)
        self.last_reload_success.set(when)
