"""Client authentication: `Proxy-Authorization: Basic base64(user:token)`.

The password is a gateway token (the user name is ignored, so `HTTPS_PROXY=
http://me:<token>@host:8888` works); it is checked locally against the snapshot's
SHA-256 hashes, so a revocation applies as fast as any other change. Every CONNECT and
every absolute-form request needs it, tunnels included: an unauthenticated proxy would
be an open relay into whatever network the proxy sits in.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from data_plane.gateway_auth import Principal, lookup
from data_plane.proxy.routes import ProxyTable

REALM = 'Basic realm="AI Bridge Proxy"'


@dataclass(frozen=True)
class Identity:
    """A client that passed proxy authentication: its gateway token and principal."""

    token: str  # never logged; sent to the bridge only
    principal: Principal

    def __repr__(self) -> str:  # keep the token out of any repr that reaches a log
        return f"Identity(principal={self.principal.principal_name!r})"


def basic_password(header: bytes | None) -> str | None:
    """The password of a Basic credential, or None when absent or malformed."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    _user, sep, password = decoded.partition(":")
    return password if sep and password else None


def is_gateway_token(table: ProxyTable, value: str) -> bool:
    """Whether a credential a client sent is one of ours (and so not a provider key)."""
    return lookup(table.tokens, value.encode()) is not None


def authenticate(table: ProxyTable, header: bytes | None) -> Identity | str:
    """The client's identity, or why it is refused (a message safe to show the client)."""
    token = basic_password(header)
    if token is None:
        return "proxy authentication required: send the gateway token as the Basic password"
    principal = lookup(table.tokens, token.encode())
    if principal is None:
        return "invalid or revoked gateway token"
    if not principal.may_use_gateway:
        return "this token's role may not use the proxy"
    return Identity(token, principal)
