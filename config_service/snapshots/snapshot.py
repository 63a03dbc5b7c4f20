"""Immutable, pre-serialized snapshots: one per (version, scope).

Every subscriber of a scope is sent the very same bytes, serialized once when the
revision changes: per-subscriber work is a socket write. Snapshots are checked for
consistency before they are published (sorted, unique names, no secret outside the
bridge scope, no token hash but those of the roles that may use the gateway).

The data plane gets the hashes of gateway (member) tokens only: never an owner's (an
admin credential, AIBRIDGE_ADMIN_TOKEN included), an auditor's or a daemon's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from aibridge.config.v1 import config_service_pb2 as pb
from aibridge.config.v1 import token_pb2
from config_service.rbac import POLICY, Action, Role, Scope
from config_service.snapshots.state import State
from config_service.snapshots.views import evaluate, render

SCOPE_TO_PROTO = {
    Scope.BRIDGE: pb.SNAPSHOT_SCOPE_BRIDGE,
    Scope.PROXY: pb.SNAPSHOT_SCOPE_PROXY,
    Scope.METADATA: pb.SNAPSHOT_SCOPE_METADATA,
}
ROLE_TO_PROTO: dict[Role, token_pb2.Role.ValueType] = {
    Role.OWNER: token_pb2.ROLE_OWNER,
    Role.AUDITOR: token_pb2.ROLE_AUDITOR,
    Role.MEMBER: token_pb2.ROLE_MEMBER,
    Role.BRIDGE: token_pb2.ROLE_BRIDGE,
    Role.PROXY: token_pb2.ROLE_PROXY,
}


class InconsistentSnapshot(Exception):
    """A built snapshot violates an invariant: it is not published."""


@dataclass(frozen=True)
class SnapshotEntry:
    version: str
    scope: Scope
    message: pb.ProviderSnapshot = field(repr=False)
    # WatchProvidersResponse{snapshot} serialized once; GetProviderSnapshotResponse has
    # the same single field number, so the same bytes answer both RPCs.
    payload: bytes = field(repr=False)


def build(state: State, allow_byok: bool, now: datetime) -> dict[Scope, SnapshotEntry]:
    """Render the state once per scope."""
    version = str(state.revision)
    generated_at = Timestamp()
    generated_at.FromDatetime(now)
    statuses = [evaluate(record, allow_byok) for record in state.providers]
    client_roles = POLICY[Action.USE_GATEWAY]
    entries: dict[Scope, SnapshotEntry] = {}
    for scope in Scope:
        snapshot = pb.ProviderSnapshot(
            version=version,
            generated_at=generated_at,
            scope=SCOPE_TO_PROTO[scope],
            allow_byok=allow_byok,
            history=state.history,
        )
        for record, (status, reason) in zip(state.providers, statuses, strict=True):
            snapshot.providers.append(render(record, scope, status, reason))
        if scope is not Scope.METADATA:
            for token in state.tokens:
                if token.role in client_roles:
                    snapshot.gateway_tokens.add(
                        token_id=token.token_id,
                        sha256=token.sha256,
                        principal_id=token.principal_id,
                        principal_name=token.principal_name,
                        role=ROLE_TO_PROTO[token.role],
                    )
        check(snapshot, scope)
        payload = pb.WatchProvidersResponse(snapshot=snapshot).SerializeToString()
        entries[scope] = SnapshotEntry(version, scope, snapshot, payload)
    return entries


def check(snapshot: pb.ProviderSnapshot, scope: Scope) -> None:
    names = [p.name for p in snapshot.providers]
    if names != sorted(names) or len(set(names)) != len(names):
        raise InconsistentSnapshot("providers are not sorted by unique name")
    gateway_roles = {ROLE_TO_PROTO[role] for role in POLICY[Action.USE_GATEWAY]}
    if any(t.role not in gateway_roles for t in snapshot.gateway_tokens):
        raise InconsistentSnapshot("a token that may not use the gateway is in the snapshot")
    if scope is Scope.BRIDGE:
        return
    for provider in snapshot.providers:
        if any(k.secret for k in provider.keys) or provider.bedrock.access_key_secret:
            raise InconsistentSnapshot(f"secret outside the bridge scope in {provider.name}")
        if scope is Scope.PROXY and (provider.keys or provider.bedrock.access_key_hint):
            raise InconsistentSnapshot(f"key material in the proxy scope in {provider.name}")
