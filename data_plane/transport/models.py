"""What a request and its answer are made of: origin, timeouts, reply."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NamedTuple

import httpx

Origin = tuple[bytes, str, int]  # scheme, host, port
Headers = list[tuple[bytes, bytes]]


class Timeouts(NamedTuple):
    connect: float | None
    read: float | None
    write: float | None
    pool: float | None


DEFAULT_TIMEOUTS = Timeouts(connect=10.0, read=600.0, write=60.0, pool=30.0)


# Takes one piece of a body; returns a wait when its consumer is full (nothing more is
# read from the upstream until it is over), else None. It must not raise.
Sink = Callable[[bytes], Awaitable[None] | None]


class Reply(NamedTuple):
    """An upstream's answer: status, raw headers, body chunks as they arrive, and a close
    that hands the connection back (call it once the body is read or abandoned).

    `relay`, when the connection offers it, is the other way to take the body (one or the
    other, not both): every piece handed to a `Sink` from the connection's own read
    callback, no task woken per read; it returns at the body's end and raises as the
    chunks would."""

    status: int
    headers: Headers
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]
    http_version: bytes = b"HTTP/1.1"
    relay: Callable[[Sink], Awaitable[None]] | None = None


def _default_port(scheme: bytes) -> int:
    return 443 if scheme == b"https" else 80


def origin_of(url: str | httpx.URL) -> tuple[Origin, bytes]:
    """(scheme, host, port) and the path prefix of an absolute http(s) URL."""
    parsed = httpx.URL(url)
    scheme = parsed.raw_scheme
    port = parsed.port or _default_port(scheme)
    return (scheme, parsed.raw_host.decode("ascii"), port), parsed.raw_path.split(b"?", 1)[0]


def origin_host(origin: Origin) -> bytes:
    """The Host header for an origin (the port only when it is not the default)."""
    scheme, host, port = origin
    name = f"[{host}]" if ":" in host else host
    return (name if port == _default_port(scheme) else f"{name}:{port}").encode("ascii")


def needs_length(method: str, body: bytes) -> bool:
    """Whether the request carries Content-Length: a body, or a method that has one."""
    return bool(body) or method in ("POST", "PUT", "PATCH")
