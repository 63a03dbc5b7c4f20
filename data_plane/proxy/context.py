"""What every connection handler shares: settings, the current routing table, clients.

The table is the only mutable field, replaced whole (one assignment) on every snapshot;
a handler reads it once per decision, so a swap never changes a decision half-way.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from data_plane.dump import Dumper
from data_plane.proxy.ca import LeafCache
from data_plane.proxy.egress import Egress
from data_plane.proxy.metrics import ProxyMetrics
from data_plane.proxy.routes import EMPTY, ProxyTable
from data_plane.proxy.settings import ProxySettings


def make_client(*, timeout_read: float = 600.0) -> httpx.AsyncClient:
    """A pooled client that sends exactly the headers it is given.

    trust_env is off: the proxy must never route its own traffic through HTTP(S)_PROXY,
    which on a developer machine may well point back at the proxy itself.
    """
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(connect=10.0, read=timeout_read, write=60.0, pool=30.0),
        limits=httpx.Limits(
            max_connections=2000, max_keepalive_connections=500, keepalive_expiry=60.0
        ),
        follow_redirects=False,
        trust_env=False,
    )
    for name in ("user-agent", "accept", "accept-encoding"):
        del client.headers[name]
    return client


@dataclass
class Shared:
    settings: ProxySettings
    metrics: ProxyMetrics
    leaves: LeafCache
    ca_pem: bytes
    bridge: httpx.AsyncClient  # to the bridge (one pool for every provider request)
    origins: httpx.AsyncClient  # plain http:// forwards to checked addresses
    egress: Egress
    dumper: Dumper | None = None
    table: ProxyTable = EMPTY
