"""The bridge's upstream transport, split by concern as httpcore splits its own.

    models.py      Origin, Timeouts, Reply: what a request and its answer are made of
    pool.py        UpstreamTransport: the pool and its one request entry point, `request`
                   (`handle_async_request` adapts httpx's Request/Response to it)
    connection.py  opening one connection: TCP, TLS with ALPN, the protocol the server chose
    http11.py      one HTTP/1.1 connection: the request head, httptools parsing, the body
    http2.py       origins that chose h2, served by one shared httpx HTTP/2 transport
    proxy.py       HTTP(S)_PROXY / NO_PROXY: origins behind a proxy, served by httpx
    delegated.py   handing one request to an httpx transport, answered as a Reply

Why not httpcore's pool for HTTP/1.1: it scans every pooled connection on each request
and each release (asking each idle one whether its socket is readable), so with tens of
requests in flight most of the bridge's CPU went to pool bookkeeping. Here idle
connections are a stack per origin: taking and returning one is O(1), and a connection
the server closes while idle is noticed by the event loop (`connection_lost`) and never
reused. Bodies are handed over raw, still content-encoded, as they arrive, with flow
control (reading pauses while the consumer lags).

Failures are httpx exceptions (ConnectError, ConnectTimeout, ReadTimeout, WriteTimeout,
ReadError, RemoteProtocolError, PoolTimeout), so callers see what httpx would raise.
"""

from data_plane.transport.models import DEFAULT_TIMEOUTS, Origin, Reply, Timeouts, origin_of
from data_plane.transport.pool import UpstreamTransport

__all__ = ["DEFAULT_TIMEOUTS", "Origin", "Reply", "Timeouts", "UpstreamTransport", "origin_of"]
