"""What every connection handler shares: settings, the current routing table, transports.

The table is the only mutable field, replaced whole (one assignment) on every snapshot;
a handler reads it once per decision, so a swap never changes a decision half-way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from data_plane.dump import Dumper
from data_plane.http_client import KEEPALIVE_EXPIRY, MAX_CONNECTIONS, MAX_KEEPALIVE
from data_plane.proxy.ca import LeafCache
from data_plane.proxy.egress import Egress
from data_plane.proxy.metrics import ProxyMetrics
from data_plane.proxy.routes import EMPTY, ProxyTable
from data_plane.proxy.settings import ProxySettings
from data_plane.transport import DEFAULT_TIMEOUTS, Origin, UpstreamTransport, origin_of

# The bridge (uvicorn) closes a connection idle for 5 s: the proxy stops reusing one
# before that, so a request never races the bridge's close on a stale connection.
BRIDGE_KEEPALIVE_EXPIRY = 4.0

if TYPE_CHECKING:
    from data_plane.proxy.tracing import ProxyTelemetry


def make_proxy_transport(
    *, read_timeout: float = 600.0, keepalive_expiry: float = KEEPALIVE_EXPIRY
) -> UpstreamTransport:
    """A keep-alive pool that sends exactly the headers it is given (and keeps no cookies).

    trust_env is off: the proxy must never route its own traffic through HTTP(S)_PROXY,
    which on a developer machine may well point back at the proxy itself.
    """
    return UpstreamTransport(
        max_connections=MAX_CONNECTIONS,
        max_keepalive=MAX_KEEPALIVE,
        keepalive_expiry=keepalive_expiry,
        timeouts=DEFAULT_TIMEOUTS._replace(read=read_timeout),
        trust_env=False,
    )


@dataclass(frozen=True)
class BridgeHop:
    """The bridge as the proxy reaches it: a pool, its origin and the base path of its URL."""

    transport: UpstreamTransport
    origin: Origin
    base: bytes  # AIBRIDGE_PROXY_BRIDGE_URL's path ("" for most), before /<provider>/...

    @classmethod
    def to(cls, bridge_url: str) -> BridgeHop:
        origin, base = origin_of(bridge_url)
        transport = make_proxy_transport(keepalive_expiry=BRIDGE_KEEPALIVE_EXPIRY)
        return cls(transport, origin, base.rstrip(b"/"))

    def target(self, bridge_path: str) -> bytes:
        """The request target on the bridge of a `/<provider>/...` path."""
        return self.base + bridge_path.encode("latin-1")


@dataclass
class Shared:
    settings: ProxySettings
    metrics: ProxyMetrics
    leaves: LeafCache
    ca_pem: bytes
    bridge: BridgeHop  # to the bridge (one pool for every provider request)
    origins: UpstreamTransport  # plain http:// forwards to checked addresses
    egress: Egress
    dumper: Dumper | None = None
    table: ProxyTable = EMPTY
    tracing: ProxyTelemetry | None = None  # spans, when telemetry is on
