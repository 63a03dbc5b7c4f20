"""Prometheus metrics of one proxy, in its own registry (prefix `aibridgeproxyd_`)."""

from __future__ import annotations

from aibridge.worker_metrics import DaemonMetrics, WorkerIdentity
from data_plane.follow import FollowMetrics
from data_plane.proxy.routes import ProxyTable

P = "aibridgeproxyd_"


class ProxyMetrics(DaemonMetrics):
    """The proxy's series (DaemonMetrics: which registry /metrics renders)."""

    def __init__(self, worker: WorkerIdentity | None = None) -> None:
        super().__init__(P, worker)
        m = self.series
        self.connect_sessions = m.counter(
            "connect_sessions",
            "CONNECT sessions accepted, by what happened to them (mitm or tunnel).",
            ("type",),
        )
        self.refused = m.counter(
            "refused",
            "CONNECT or proxy requests refused (auth, port, private, dial, bad_request).",
            ("reason",),
        )
        self.client_connections = m.gauge("client_connections", "Client connections held now.")
        self.connections_closed = m.counter(
            "connections_closed",
            "Client connections the proxy dropped: silent (idle, slow head or not reading), "
            "evicted (longest-waiting, at the connection limit), over_capacity (503).",
            ("reason",),
        )
        self.mitm_requests = m.counter(
            "mitm_requests", "Provider requests handed to the bridge.", ("provider",)
        )
        self.mitm_responses = m.counter(
            "mitm_responses",
            "Responses to provider requests, by status code.",
            ("provider", "code"),
        )
        self.inflight = m.gauge("inflight_mitm_requests", "Provider requests being served.")
        self.forwarded = m.counter(
            "forwarded_requests",
            "Plain http:// requests forwarded to other hosts, by status code.",
            ("code",),
        )
        self.follow = FollowMetrics(
            m.registry,
            P,
            provider_help="Providers of the applied snapshot "
            "and whether their host is intercepted.",
        )
        self.intercepted_hosts = m.gauge(
            "intercepted_hosts", "Hosts whose TLS the proxy terminates.", mode="liveall"
        )

    def snapshot_applied(self, table: ProxyTable, when: float) -> None:
        self.intercepted_hosts.set(len(table.hosts))
        providers = [(name, ptype, status) for name, (ptype, status) in table.providers.items()]
        self.follow.applied(table.version, providers, when)
