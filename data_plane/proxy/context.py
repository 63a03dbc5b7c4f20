"""What every connection handler shares: settings, the current routing table, clients.

The table is the only mutable field, replaced whole (one assignment) on every snapshot;
a handler reads it once per decision, so a swap never changes a decision half-way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from data_plane.dump import Dumper
from data_plane.http_client import make_client
from data_plane.proxy.ca import LeafCache
from data_plane.proxy.egress import Egress
from data_plane.proxy.metrics import ProxyMetrics
from data_plane.proxy.routes import EMPTY, ProxyTable
from data_plane.proxy.settings import ProxySettings

if TYPE_CHECKING:
    from data_plane.proxy.tracing import ProxyTelemetry


def make_proxy_client(*, read_timeout: float = 600.0) -> httpx.AsyncClient:
    """A pooled client that sends exactly the headers it is given.

    trust_env is off: the proxy must never route its own traffic through HTTP(S)_PROXY,
    which on a developer machine may well point back at the proxy itself. No cookie jar:
    the client is shared by every user of the proxy.
    """
    return make_client(trust_env=False, read_timeout=read_timeout)


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
    tracing: ProxyTelemetry | None = None  # spans, when telemetry is on
