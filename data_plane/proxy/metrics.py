"""Prometheus metrics of one proxy, in its own registry (prefix `aibridgeproxyd_`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from data_plane.follow import FollowMetrics
from data_plane.proxy.routes import ProxyTable
from data_plane.worker_metrics import WorkerIdentity, scrape_registry

P = "aibridgeproxyd_"


class ProxyMetrics:
    """The proxy's series; `registry` is what /metrics renders: these series, or, in a
    worker, every worker's (data_plane/worker_metrics.py)."""

    def __init__(self, worker: WorkerIdentity | None = None) -> None:
        r = CollectorRegistry()
        self.registry = r if worker is None else scrape_registry(worker, P)
        self.connect_sessions = Counter(
            P + "connect_sessions",
            "CONNECT sessions accepted, by what happened to them (mitm or tunnel).",
            ["type"],
            registry=r,
        )
        self.refused = Counter(
            P + "refused",
            "CONNECT or proxy requests refused (auth, port, private, dial, bad_request).",
            ["reason"],
            registry=r,
        )
        self.client_connections = Gauge(
            P + "client_connections",
            "Client connections held now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections_closed = Counter(
            P + "connections_closed",
            "Client connections the proxy dropped: silent (idle, slow head or not reading), "
            "evicted (longest-waiting, at the connection limit), over_capacity (503).",
            ["reason"],
            registry=r,
        )
        self.mitm_requests = Counter(
            P + "mitm_requests", "Provider requests handed to the bridge.", ["provider"], registry=r
        )
        self.mitm_responses = Counter(
            P + "mitm_responses",
            "Responses to provider requests, by status code.",
            ["provider", "code"],
            registry=r,
        )
        self.inflight = Gauge(
            P + "inflight_mitm_requests",
            "Provider requests being served.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.forwarded = Counter(
            P + "forwarded_requests",
            "Plain http:// requests forwarded to other hosts, by status code.",
            ["code"],
            registry=r,
        )
        self.follow = FollowMetrics(
            r,
            P,
            provider_help="Providers of the applied snapshot "
            "and whether their host is intercepted.",
        )
        self.intercepted_hosts = Gauge(
            P + "intercepted_hosts",
            "Hosts whose TLS the proxy terminates.",
            registry=r,
            multiprocess_mode="liveall",
        )

    def snapshot_applied(self, table: ProxyTable, when: float) -> None:
        self.intercepted_hosts.set(len(table.hosts))
        providers = [(name, ptype, status) for name, (ptype, status) in table.providers.items()]
        self.follow.applied(table.version, providers, when)
