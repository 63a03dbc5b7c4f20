"""Prometheus metrics of the config service, served on AIBRIDGE_METRICS_LISTEN.

Subscriber counts and the revision are read at scrape time from the live objects;
counters and histograms are updated where things happen.

With `--workers N` every worker serves /metrics on the one metrics port (SO_REUSEPORT)
and any of them renders every worker's series (aibridge/worker_metrics.py): counters and
histograms summed; the subscriber gauge summed over live workers and the revision the
highest, both set by each worker every second (`set_live`) rather than read at scrape
time, since a scrape reaches one worker only.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Gauge, make_wsgi_app, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from aibridge.series import Series
from aibridge.worker_metrics import WorkerIdentity, scrape_registry
from config_service.rbac import Role

PREFIX = "aibridge_config_"

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


class _SharedPortServer(socketserver.ThreadingMixIn, WSGIServer):
    """/metrics of one worker, on the port its siblings listen on too."""

    daemon_threads = True
    allow_reuse_port = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class ConfigMetrics:
    def __init__(self, worker: WorkerIdentity | None = None) -> None:
        own = CollectorRegistry()
        self._worker = worker
        # What /metrics renders: these series, or, in a worker, every worker's.
        self.registry = own if worker is None else scrape_registry(worker, PREFIX)
        m = Series(own, PREFIX)
        self.snapshots_sent = m.counter(
            "snapshots_sent", "Snapshots sent on watch streams", ("scope",)
        )
        self.build_seconds = m.histogram(
            "snapshot_build_seconds", "Time to load and serialize a snapshot", BUCKETS
        )
        self.notification_lag = m.histogram(
            "notification_lag_seconds",
            "From a change notification (PostgreSQL NOTIFY, the SQLite signal) to the new snapshot",
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

        self._live_subscribers: Gauge | None = None
        self._live_revision: Gauge | None = None
        if worker is not None:
            self._live_subscribers = m.gauge(
                "subscribers", "Open WatchProviders streams by role", ("role",), mode="livesum"
            )
            self._live_revision = m.gauge(
                "revision", "Revision of the published snapshot", mode="livemax"
            )

    def watch_live(
        self, subscribers: Callable[[], dict[Role, int]], revision: Callable[[], int]
    ) -> None:
        """The subscriber and revision gauges, read at scrape time (one process)."""
        if self._worker is None:
            self.registry.register(_LiveCollector(subscribers, revision))

    def set_live(self, subscribers: dict[Role, int], revision: int) -> None:
        """A worker's subscriber counts and revision, into the merged gauges."""
        if self._live_subscribers is None or self._live_revision is None:
            return
        for role in Role:
            self._live_subscribers.labels(role=role.value).set(subscribers.get(role, 0))
        self._live_revision.set(revision)

    def serve(self, host: str, port: int, reuse_port: bool = False) -> tuple[Any, int]:
        """Start the /metrics HTTP server in a thread; return it and the bound port.
        `reuse_port`: a worker, sharing the port with its siblings."""
        if not reuse_port:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
            return server, int(server.server_port)
        httpd = make_server(
            host, port, make_wsgi_app(self.registry), _SharedPortServer, handler_class=_Quiet
        )
        threading.Thread(target=httpd.serve_forever, daemon=True, name="metrics").start()
        return httpd, int(httpd.server_port)
