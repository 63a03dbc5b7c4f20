"""The one RBAC policy (DESIGN §4): which role may do which action.

The data-access layer (config_service.store) calls `authorize` for every read and
write and scopes what it returns with `scope_for`; gRPC handlers never decide
access themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from config_service.errors import PermissionDenied


class Role(StrEnum):
    OWNER = "owner"
    AUDITOR = "auditor"
    MEMBER = "member"
    BRIDGE = "bridge"
    PROXY = "proxy"


class Action(StrEnum):
    READ_PROVIDERS = "read provider metadata"
    READ_SECRETS = "read provider secrets"
    WRITE_PROVIDERS = "create, update or delete providers"
    MANAGE_TOKENS = "create, revoke or list tokens"
    # A bridge token reads every plaintext provider key: only the service itself mints
    # daemon tokens (bootstrap env, `aibridge tokens create --local`), never a caller.
    MINT_DAEMON_TOKENS = "create bridge or proxy tokens over the API"
    WATCH_SNAPSHOT = "watch the provider snapshot"
    REPORT_STATUS = "report subscriber status"
    LIST_SUBSCRIBERS = "list subscribers"
    USE_GATEWAY = "use the bridge or proxy as a client"
    WRITE_USAGE = "write interception records"
    READ_ALL_USAGE = "read all interception records"
    READ_OWN_USAGE = "read its own interception records"
    READ_USAGE_CONTENT = "read prompts and tool arguments"


class Scope(StrEnum):
    """The view of the provider set a subject receives."""

    BRIDGE = "bridge"  # plaintext secrets + gateway (member) token hashes
    PROXY = "proxy"  # no key material at all + gateway (member) token hashes
    METADATA = "metadata"  # masked key hints, no token hashes


_O, _A, _M, _B, _P = Role.OWNER, Role.AUDITOR, Role.MEMBER, Role.BRIDGE, Role.PROXY

POLICY: dict[Action, frozenset[Role]] = {
    Action.READ_PROVIDERS: frozenset({_O, _A, _B, _P}),
    Action.READ_SECRETS: frozenset({_B}),
    Action.WRITE_PROVIDERS: frozenset({_O}),
    Action.MANAGE_TOKENS: frozenset({_O}),
    Action.MINT_DAEMON_TOKENS: frozenset(),
    Action.WATCH_SNAPSHOT: frozenset({_O, _A, _B, _P}),
    Action.REPORT_STATUS: frozenset({_B, _P}),
    Action.LIST_SUBSCRIBERS: frozenset({_O, _A}),
    # Only members: an owner token is an admin credential and never leaves the control
    # plane (docs/design-changes.md); owners use the gateway with a member token.
    Action.USE_GATEWAY: frozenset({_M}),
    # DESIGN §11: the bridge writes usage and reads none of it.
    Action.WRITE_USAGE: frozenset({_B}),
    Action.READ_ALL_USAGE: frozenset({_O, _A}),
    Action.READ_OWN_USAGE: frozenset({_O, _A, _M}),
    Action.READ_USAGE_CONTENT: frozenset({_O, _A}),
}


@dataclass(frozen=True)
class Subject:
    """Who is calling: a principal with one role, or the service itself (seeding, bootstrap)."""

    principal_id: str
    name: str
    role: Role | None
    token_id: str = ""

    @property
    def is_system(self) -> bool:
        return self.role is None


SYSTEM = Subject(principal_id="system", name="system", role=None)


def allowed(subject: Subject, action: Action) -> bool:
    if subject.is_system:
        return True
    return subject.role in POLICY[action]


def authorize(subject: Subject, action: Action) -> None:
    """Raise PermissionDenied unless the subject's role may perform the action."""
    if not allowed(subject, action):
        raise PermissionDenied(f"role {subject.role} may not {action}")


@dataclass(frozen=True)
class UsageView:
    """What of the interception records a subject reads."""

    principal_id: str | None  # None: every principal's records; else only this one's
    content: bool  # prompts and tool arguments; blanked when False


def usage_view(subject: Subject) -> UsageView:
    """The records a subject may read; PermissionDenied when it may read none."""
    authorize(subject, Action.READ_OWN_USAGE)
    everyone = allowed(subject, Action.READ_ALL_USAGE)
    return UsageView(
        principal_id=None if everyone else subject.principal_id,
        content=allowed(subject, Action.READ_USAGE_CONTENT),
    )


def scope_for(subject: Subject) -> Scope:
    """The snapshot scope a subject sees: secrets only for the bridge role."""
    if subject.is_system or allowed(subject, Action.READ_SECRETS):
        return Scope.BRIDGE
    if subject.role is Role.PROXY:
        return Scope.PROXY
    return Scope.METADATA
