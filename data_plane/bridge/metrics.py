"""Prometheus metrics of one bridge app, in its own registry.

Key-pool and breaker states are read from the current routing table at scrape time
(recovery from a cooldown is lazy, so a stored gauge would go stale).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aibridge.worker_metrics import DaemonMetrics, WorkerIdentity
from data_plane.bridge.breaker import BreakerState
from data_plane.follow import FollowMetrics
from data_plane.recording.metrics import RecordingMetrics

if TYPE_CHECKING:
    from data_plane.bridge.routing import RoutingTable

P = "aibridged_"
DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.5, 2, 5, 15, 30, 60, 120, 300)


class _StateCollector(Collector):
    def __init__(self, table: Callable[[], RoutingTable]) -> None:
        self._table = table

    def collect(self) -> Iterator[Metric]:
        keys = GaugeMetricFamily(
            P + "key_pool_keys", "Keys per provider and state.", labels=["provider", "state"]
        )
        breakers = GaugeMetricFamily(
            P + "circuit_breaker_state",
            "0 closed, 0.5 half-open, 1 open.",
            labels=["provider", "route", "model"],
        )
        for provider in self._table().providers.values():
            if provider.pool is not None:
                for state, count in provider.pool.state_counts().items():
                    keys.add_metric([provider.name, state], count)
            if provider.breakers is not None:
                for (route, model), breaker in list(provider.breakers.breakers.items()):
                    breakers.add_metric([provider.name, route, model], breaker.state.value)
        yield keys
        yield breakers


class BridgeMetrics(DaemonMetrics):
    """The bridge's series (DaemonMetrics: which registry /metrics renders)."""

    def __init__(self, worker: WorkerIdentity | None = None) -> None:
        super().__init__(P, worker)
        m = self.series
        prm, pr = ("provider", "route", "model"), ("provider", "route")
        self.requests = m.counter("requests", "Requests answered.", (*prm, "status"))
        self.in_flight = m.gauge("requests_in_flight", "Requests being served.", pr)
        self.duration = m.histogram(
            "request_duration_seconds", "Time to the end of the response.", DURATION_BUCKETS, pr
        )
        self.upstream_errors = m.counter(
            "upstream_errors", "Upstream transport failures.", (*pr, "kind")
        )
        self.key_transitions = m.counter(
            "key_pool_state_transitions", "Keys cooled down.", ("provider", "reason")
        )
        self.key_exhaustions = m.counter(
            "key_pool_exhaustions", "Requests with no usable key.", ("provider", "outcome")
        )
        self.failovers = m.counter(
            "key_pool_failovers", "Requests retried on another key.", ("provider",)
        )
        self.breaker_trips = m.counter("circuit_breaker_trips", "Breakers opened.", prm)
        self.breaker_rejects = m.counter("circuit_breaker_rejects", "Requests refused open.", prm)
        self.tokens = m.counter(
            "tokens", "Tokens reported by upstreams.", ("provider", "model", "type")
        )
        self.connections_closed = m.counter(
            "connections_closed", "Client connections closed by a connection limit.", ("reason",)
        )
        self.unrecorded = m.counter(
            "unrecorded_requests",
            "Provider requests answered without an interception record (recording on): "
            "unknown provider, or no valid member token to attribute them to.",
            ("reason",),
        )
        self.follow = FollowMetrics(m.registry, P)
        self.recording = RecordingMetrics(m.registry, P)

        # Label children of the per-request series, looked up once (labels() validates,
        # locks and allocates on every call).
        self._route_children: dict[tuple[str, str], tuple[Gauge, Histogram]] = {}
        self._request_children: dict[tuple[str, str, str, int], Counter] = {}
        self._token_children: dict[tuple[str, str, str], Counter] = {}

    def route_series(self, provider: str, route: str) -> tuple[Gauge, Histogram]:
        """In-flight gauge and duration histogram of one (provider, route)."""
        key = (provider, route)
        children = self._route_children.get(key)
        if children is None:
            children = self._route_children[key] = (
                self.in_flight.labels(provider, route),
                self.duration.labels(provider, route),
            )
        return children

    def request_counter(self, provider: str, route: str, model: str, status: int) -> Counter:
        key = (provider, route, model, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(
                provider, route, model, str(status)
            )
        return child

    def token_counter(self, provider: str, model: str, kind: str) -> Counter:
        key = (provider, model, kind)
        child = self._token_children.get(key)
        if child is None:
            child = self._token_children[key] = self.tokens.labels(provider, model, kind)
        return child

    def watch_table(self, table: Callable[[], RoutingTable]) -> None:
        self.registry.register(_StateCollector(table))

    def on_key_transition(self, provider: str, reason: str) -> None:
        self.key_transitions.labels(provider, reason).inc()

    def on_breaker_change(self, name: str, state: BreakerState) -> None:
        if state is BreakerState.OPEN:
            provider, route, model = ([*name.split(":", 2), "", ""])[:3]
            self.breaker_trips.labels(provider, route, model).inc()

    def snapshot_applied(self, table: RoutingTable, when: float) -> None:
        providers = [(p.name, p.type, table.status_of(p)) for p in table.providers.values()]
        providers += [(name, unbuilt.type, "error") for name, unbuilt in table.failed.items()]
        self.follow.applied(table.version, providers, when)
