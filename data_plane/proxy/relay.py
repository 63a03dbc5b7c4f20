"""Send one parsed client request on and stream the answer back through h11.

Used for provider requests (to the bridge) and for plain `http://` forwards (to a checked
origin address), both on the data plane's keep-alive transport (data_plane/transport/:
an O(1) idle stack per origin, no httpx Request/Response on the way). Request bodies are
buffered (they are bounded, and the bridge buffers them too); responses are relayed chunk
by chunk as they arrive, undecoded, so SSE events reach the client as soon as the bridge
flushes them. Without a Content-Length h11 sends the response chunked (HTTP/1.1) or
close-delimited (HTTP/1.0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus

import h11
import httpx

from aibridge.logs import get_logger
from data_plane.dump import BodyCapture
from data_plane.errors import Silent
from data_plane.proxy.auth import Identity, is_gateway_token
from data_plane.proxy.h11io import H11Stream
from data_plane.proxy.routes import ProxyTable
from data_plane.transport import Origin, UpstreamTransport

log = get_logger(__name__)

# Hop-by-hop (RFC 9110 §7.6.1) and proxy-only headers: never passed on in either direction.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Recomputed by httpx from the buffered body and the URL.
_RECOMPUTED = frozenset({b"host", b"content-length"})
# Identity headers only the proxy may set: a client cannot choose whose token is used.
# The request id and the via marker tell the bridge the request came through the proxy
# (its record is marked proxied and keeps the proxy's id; see the bridge's
# interception/record.py for why a forged one only mislabels the forger's own records).
_OURS = frozenset({b"x-aibridge-token", b"x-aibridge-request-id", b"x-aibridge-via"})


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    named: set[bytes] = set()
    for key, value in headers:
        if key == b"connection":
            named.update(t.strip().lower() for t in value.split(b","))
    return named


def passable(
    headers: list[tuple[bytes, bytes]], extra: frozenset[bytes] = frozenset()
) -> list[tuple[bytes, bytes]]:
    """Headers minus hop-by-hop ones (including those the Connection header names)."""
    drop = HOP_BY_HOP | extra | _connection_tokens(headers)
    return [(k, v) for k, v in headers if k not in drop]


def _bearer(value: bytes) -> bytes | None:
    scheme, _, token = value.partition(b" ")
    return token.strip() or None if scheme.lower() == b"bearer" else None


def bridge_headers(
    request: h11.Request,
    identity: Identity,
    table: ProxyTable,
    request_id: str,
    *,
    pooled_keys: bool = False,
) -> list[tuple[bytes, bytes]]:
    """The client's headers as the bridge must see them: with the client's identity.

    A client credential that is not a gateway token is the user's own provider key
    (BYOK): it is kept and the gateway token travels in X-AIBridge-Token. Otherwise
    (no credential, or the gateway token itself) the gateway token becomes the
    credential and the bridge injects a pooled key. With `pooled_keys`
    (AIBRIDGE_PROXY_POOLED_KEYS) a client key is BYOK only when the client asks for it
    by sending X-AIBridge-Token too (whose value is replaced by the token the client
    authenticated to the proxy with); any other client credential is dropped, so a
    placeholder key a tool ships with never goes upstream.
    """
    asked = any(key == b"x-aibridge-token" for key, _ in request.headers)
    headers = passable(list(request.headers), _RECOMPUTED | _OURS)
    own: bytes | None = None
    for key, value in headers:
        if key == b"authorization":
            own = own or _bearer(value)
        elif key == b"x-api-key":
            own = own or value.strip() or None
    token = identity.token.encode()
    byok = own is not None and not is_gateway_token(table, own.decode("latin-1"))
    if byok and (asked or not pooled_keys):
        headers.append((b"x-aibridge-token", token))
    else:
        headers = [(k, v) for k, v in headers if k not in (b"authorization", b"x-api-key")]
        headers.append((b"authorization", b"Bearer " + token))
    headers.append((b"x-aibridge-request-id", request_id.encode()))
    headers.append((b"x-aibridge-via", b"proxy"))
    return headers


@dataclass
class Outcome:
    """What happened to one relayed request (for metrics, logs and dumps)."""

    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""  # captured only when asked (dumps), up to the dump cap
    failed: str = ""  # transport failure towards the target, if any
    broken: bool = False  # the client connection cannot be reused


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


async def relay(
    stream: H11Stream,
    transport: UpstreamTransport,
    origin: Origin,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    *,
    host: bytes | None = None,
    capture: bool = False,
) -> Outcome:
    """`method target` to `origin` (Host: `host`, else the origin's), answered on `stream`.

    `headers` carry neither Host nor Content-Length: the transport writes both.
    """
    outcome = Outcome()
    try:
        reply = await transport.request(origin, method.decode(), target, headers, body, host=host)
    except httpx.HTTPError as exc:
        # The type name only: the message may hold internal addresses.
        outcome.failed = type(exc).__name__
        outcome.status = 504 if isinstance(exc, httpx.TimeoutException) else 502
        await stream.error(outcome.status, "upstream unreachable")
        return outcome
    captured = BodyCapture() if capture else None
    try:
        outcome.status = reply.status
        outcome.headers = passable(reply.headers)
        await stream.send(
            h11.Response(
                status_code=reply.status, headers=outcome.headers, reason=_reason(reply.status)
            )
        )
        async for chunk in reply.chunks:
            if captured is not None:
                captured.feed(chunk)
            await stream.send(h11.Data(data=chunk))
        await stream.send(h11.EndOfMessage())
    except httpx.HTTPError as exc:
        # Mid-response: the status line is gone already, all we can do is cut the stream.
        outcome.failed = type(exc).__name__
        outcome.broken = True
    except (ConnectionError, OSError, h11.LocalProtocolError, Silent):
        outcome.broken = True  # the client left or stopped reading (or the target lied)
    finally:
        await reply.close()
    if captured is not None:
        outcome.body = captured.body()
    return outcome
