"""Gateway tokens of a snapshot: who may call the bridge, directly or through the proxy.

The snapshot carries only SHA-256 hashes of member tokens, each of 256 random bits (so
an offline guess at a hash is hopeless). Each daemon keeps them in a table keyed by the
lower-case hex digest (built with `token_table` when a snapshot is applied) and checks a
presented token with `lookup`, so a revocation applies as fast as any other change.
Only member tokens may use the gateway; a token of another role (sent by an older config
service) authenticates but is refused by the caller, each in its own words.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from aibridge.config.v1 import token_pb2

GATEWAY_ROLES = frozenset({token_pb2.ROLE_MEMBER})


@dataclass(frozen=True, eq=False)  # one object per token and snapshot: hashed by identity
class Principal:
    sha256: str
    token_id: str
    principal_id: str
    principal_name: str
    role: int

    @property
    def may_use_gateway(self) -> bool:
        return self.role in GATEWAY_ROLES


TokenTable = Mapping[str, Principal]  # lower-case hex SHA-256 -> principal


def token_table(tokens: Iterable[token_pb2.GatewayToken]) -> TokenTable:
    """The snapshot's gateway tokens, read-only, keyed by their lower-case hash."""
    return MappingProxyType(
        {
            t.sha256.lower(): Principal(
                t.sha256.lower(), t.token_id, t.principal_id, t.principal_name, t.role
            )
            for t in tokens
        }
    )


def lookup(table: TokenTable, token: bytes) -> Principal | None:
    """The principal of a presented token, or None when it is unknown or revoked."""
    digest = hashlib.sha256(token).hexdigest()
    principal = table.get(digest)
    # The lookup is keyed by the hash; confirm it in constant time all the same.
    if principal is None or not hmac.compare_digest(digest, principal.sha256):
        return None
    return principal
