"""Prometheus metrics of the config service, served on AIBRIDGE_METRICS_LISTEN.

Subscriber counts and the revision are read at scrape time from the live objects;
counters and histograms are updated where things happen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from aibridge.series import Series
from config_service.rbac import Role

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class _LiveCollector(Collector):
    def __init__(self, subscribers: Callable[[], dict[Role, int]], revision: Callable[[], int]):
        self._subscribers = subscribers
        self._revision = revision

    def collect(self) -> Iterable[Any]:
        subs = GaugeMetricFamily(
            "aibridge_config_subscribers", "Open WatchProviders streams by role", labels=["role"]
        )
        for role, count in self._subscribers().items():
            subs.add_metric([role.value], count)
        yield subs
        yield GaugeMetricFamily(
            "aibridge_config_revision", "Revision of the published snapshot", value=self._revision()
        )


class ConfigMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        m = Series(self.registry, "aibridge_config_")
        self.snapshots_sent = m.counter(
            "snapshots_sent", "Snapshots sent on watch streams", ("scope",)
        )
        self.build_seconds = m.histogram(
            "snapshot_build_seconds", "Time to load and serialize a snapshot", BUCKETS
        )
        self.notification_lag = m.histogram(
            "notification_lag_seconds",
            "From a PostgreSQL notification to the new snapshot being published",
            BUCKETS,
        )
        self.resyncs = m.counter(
            "reloads", "Snapshot reloads caused by other processes", ("reason",)
        )
        self.usage_records = m.counter(
            "usage_records",
            "Interception records received from the bridge: inserted, or duplicate (a replay)",
            ("result",),
        )
        self.usage_pruned = m.counter(
            "usage_pruned", "Interception records deleted by the retention"
        )

    def watch_live(
        self, subscribers: Callable[[], dict[Role, int]], revision: Callable[[], int]
    ) -> None:
        self.registry.register(_LiveCollector(subscribers, revision))

    def serve(self, host: str, port: int) -> tuple[Any, int]:
        """Start the /metrics HTTP server in a thread; return it and the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server, int(server.server_port)
