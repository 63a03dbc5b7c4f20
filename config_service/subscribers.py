"""Who is watching this replica, and which version each one sent, applied or rejected."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aibridge.limits import MAX_KEPT_ERRORS
from config_service.rbac import Role


@dataclass
class ProviderIssue:
    provider_name: str
    message: str


@dataclass(slots=True)  # one per open stream: no per-instance __dict__
class SubscriberState:
    stream_id: int
    node_id: str
    role: Role
    principal_id: str
    peer: str
    connected_since: datetime
    version_sent: str = ""
    version_acked: str = ""
    version_rejected: str = ""
    # The first MAX_KEPT_ERRORS; until a report has some, the one empty tuple (not a list
    # a stream).
    errors: Sequence[ProviderIssue] = ()
    errors_total: int = 0
    error_detail: str = ""
    last_report_at: datetime | None = None


class SubscriberRegistry:
    def __init__(self) -> None:
        self._streams: dict[int, SubscriberState] = {}
        # Streams by (principal, node id): every subscriber reports after every snapshot,
        # so a report must find its streams without scanning all of them (N reports per
        # change, each a scan of N streams, was O(N²) per change). Nearly always a node has
        # one stream: held as itself, a dict by stream id only from the second (a dict of
        # one is ≈ 230 B more per stream).
        self._by_node: dict[tuple[str, str], SubscriberState | dict[int, SubscriberState]] = {}
        self._ids = itertools.count(1)
        self._per_principal: Counter[str] = Counter()
        # Bumped on every change, so a publisher can tell whether there is news.
        self.changes = 0

    def add(self, node_id: str, role: Role, principal_id: str, peer: str) -> SubscriberState:
        state = SubscriberState(
            next(self._ids), node_id, role, principal_id, peer, datetime.now(UTC)
        )
        self._streams[state.stream_id] = state
        key = (principal_id, node_id)
        same_node = self._by_node.setdefault(key, state)
        if isinstance(same_node, dict):
            same_node[state.stream_id] = state
        elif same_node is not state:
            self._by_node[key] = {same_node.stream_id: same_node, state.stream_id: state}
        self._per_principal[principal_id] += 1
        self.changes += 1
        return state

    def remove(self, state: SubscriberState) -> None:
        if self._streams.pop(state.stream_id, None) is not None:
            key = (state.principal_id, state.node_id)
            same_node = self._by_node[key]
            if isinstance(same_node, dict):
                del same_node[state.stream_id]
                if not same_node:
                    del self._by_node[key]
            else:
                del self._by_node[key]
            self._per_principal[state.principal_id] -= 1
            if not self._per_principal[state.principal_id]:
                del self._per_principal[state.principal_id]
        self.changes += 1

    def count_for(self, principal_id: str) -> int:
        """Open streams of one principal on this replica."""
        return self._per_principal[principal_id]

    def all(self) -> list[SubscriberState]:
        return sorted(self._streams.values(), key=lambda s: (s.node_id, s.stream_id))

    def count_by_role(self) -> dict[Role, int]:
        counts = dict.fromkeys(Role, 0)
        for state in self._streams.values():
            counts[state.role] += 1
        return counts

    def report(
        self,
        node_id: str,
        principal_id: str,
        version: str,
        applied: bool,
        errors: list[ProviderIssue],
        detail: str,
    ) -> bool:
        """Record an ACK/NACK on the caller's open streams with that node id."""
        same_node = self._by_node.get((principal_id, node_id))
        streams = (
            ()
            if same_node is None
            else same_node.values()
            if isinstance(same_node, dict)
            else (same_node,)
        )
        for state in streams:
            if applied:
                state.version_acked = version
            else:
                state.version_rejected = version
            state.errors = errors[:MAX_KEPT_ERRORS]
            state.errors_total = len(errors)
            state.error_detail = detail
            state.last_report_at = datetime.now(UTC)
        self.changes += 1
        return bool(streams)
