"""ConfigService: WatchProviders, GetProviderSnapshot, ReportStatus, ListSubscribers.

Snapshot responses are the hub's pre-serialized bytes (the handlers have no response
serializer, so grpc sends the bytes as they are), so a change costs one serialization
per scope, not one per subscriber. WatchProviders sends through a Follower
(snapshots/follow.py): at a change the hub pokes it and it starts `context.write` itself,
so per stream per change there is one write and one loop callback, and the stream's task
only waits for the stream's end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from aibridge.config.v1 import config_service_pb2 as pb
from aibridge.limits import (
    MAX_KEPT_ERRORS,
    MAX_LIST_BYTES,
    MAX_NODE_ID,
    MAX_REPORT_ERRORS,
    MAX_REPORT_NAME,
    MAX_REPORT_TEXT,
    MAX_VERSION,
)
from aibridge.logs import get_logger
from aibridge.versions import parse_version
from config_service.auth import Authenticator
from config_service.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from config_service.metrics import ConfigMetrics
from config_service.rbac import Action, Role, Scope, Subject, authorize, scope_for
from config_service.servicers.edge import abort_for, unary
from config_service.snapshots.follow import Count, Follower, Trace
from config_service.snapshots.hub import DIVERGE_EVERY, NOWHERE, Position, SnapshotHub
from config_service.snapshots.snapshot import ROLE_TO_PROTO
from config_service.store.subscriber_status import RemoteSubscriber
from config_service.subscribers import ProviderIssue, SubscriberRegistry
from config_service.text import check_text

log = get_logger("aibridge.config.watch")
SERVICE = "aibridge.config.v1.ConfigService"

Context = grpc.aio.ServicerContext[Any, Any]
_DAEMONS = frozenset({Role.BRIDGE, Role.PROXY})  # the watchers that keep what they applied
_CUT_OFF = (
    "this config-service replica cannot reach its database, so its snapshot may be "
    "stale; retry (another replica will answer)"
)


def _ts(value: Any) -> Timestamp:
    ts = Timestamp()
    if value is not None:
        ts.FromDatetime(value)
    return ts


def _still_valid(role: Role, live: Subject | None) -> None:
    """A stream's token must still be live with the role it opened the stream with."""
    if live is None:
        raise Unauthenticated("the token was revoked; this stream is closed")
    if live.role != role:
        raise Unauthenticated("the token's role changed; this stream is closed, reconnect")


class _Trust:
    """The open streams of one token (and the role they opened with), and the position at
    which that token was last found live: checked once per change for all of them."""

    __slots__ = ("followers", "trusted_at")

    def __init__(self, trusted_at: Position) -> None:
        self.trusted_at = trusted_at
        self.followers: dict[Follower, None] = {}


def _node_id(value: str, field: str = "node_id") -> str:
    return check_text(field, value, MAX_NODE_ID)


class ConfigServicer:
    def __init__(
        self,
        hub: SnapshotHub,
        auth: Authenticator,
        registry: SubscriberRegistry,
        replica_id: str,
        metrics: ConfigMetrics,
        remote: Callable[[], Awaitable[list[RemoteSubscriber]]] | None = None,
        *,
        max_streams_per_principal: int,
    ) -> None:
        self._max_streams = max_streams_per_principal
        # Streams held by the other replicas (PostgreSQL deployments), for ListSubscribers.
        self._remote = remote
        self._metrics = metrics
        self._hub = hub
        self._auth = auth
        self._registry = registry
        self._replica_id = replica_id
        # The open watch streams by scope (offered each change's snapshot) and by token.
        self._audience: dict[Scope, dict[Follower, None]] = {}
        self._trust: dict[tuple[str, Role], _Trust] = {}
        self._sent: dict[Scope, Count] = {}  # snapshots_sent's child per scope
        hub.on_change(self._fan_out)

    async def watch(self, request: pb.WatchProvidersRequest, context: Context) -> None:
        try:
            authenticated_at = self._hub.position
            subject = await self._auth.authenticate(context)
            authorize(subject, Action.WATCH_SNAPSHOT)
            node_id = _node_id(request.node_id) or context.peer()
            known = await self._resume_at(
                request.known_version, request.known_history, subject.role
            )
            await self._still_trusted(subject, authenticated_at, context)
            self._admit(subject)
        except Exception as exc:
            await abort_for(exc, context)
            return
        # Read in full: not held for the stream's life (edge._boxed; ≈ 430 B a stream).
        del request
        assert subject.role is not None
        scope = scope_for(subject)
        hub = self._hub
        state = self._registry.add(node_id, subject.role, subject.principal_id, context.peer())
        if known == hub.position:
            # A resume (restart, other replica) with the current version: nothing is sent,
            # so no ACK follows; the subscriber already applied it, say so in ListSubscribers
            # (as the service names the version: "007" is 7).
            state.version_sent = state.version_acked = hub.version
        sent = self._sent.get(scope)
        if sent is None:
            sent = self._sent[scope] = self._metrics.snapshots_sent.labels(scope=scope.value)
        loop = asyncio.get_running_loop()
        trace = None
        if hub.tracing is not None:
            trace = Trace(hub.tracing, self._built_by, node_id, scope.value)
        follower = Follower(loop, context.write, known, state, sent, trace)
        # Its token is checked at each later position once for all its streams (_fan_out).
        trust = self._trust.get((subject.token_id, subject.role))
        if trust is None:
            trust = self._trust[subject.token_id, subject.role] = _Trust(hub.position)
        trust.followers[follower] = None
        audience = self._audience.setdefault(scope, {})
        audience[follower] = None
        try:
            self._vouch()
            # The stream's first send; each change offers it the scope's snapshot.
            if follower.offer(*hub.published(scope)):
                sent.inc()
            await follower.ended
        except ConfigError as exc:
            log.info("watch stream ended", node_id=node_id, code=exc.code.name, reason=exc.message)
            await abort_for(exc, context)
        finally:
            del audience[follower]
            del trust.followers[follower]
            if not trust.followers and self._trust.get((subject.token_id, subject.role)) is trust:
                del self._trust[subject.token_id, subject.role]
            follower.close()
            if trace is not None:
                trace.end()
            self._registry.remove(state)

    async def _still_trusted(self, subject: Subject, at: Position, context: Context) -> None:
        """The stream's token is trusted from the hub's position on (`_Trust`): when a change
        was published while the stream opened (after `at`), authenticate it again, so a
        revocation or role change the opening caught up with is not missed."""
        while self._hub.position != at:
            at = self._hub.position
            assert subject.role is not None
            _still_valid(subject.role, await self._auth.authenticate(context))

    @property
    def watching(self) -> tuple[int, int]:
        """Open watch streams on this replica, and the tokens they are held under."""
        return sum(len(a) for a in self._audience.values()), len(self._trust)

    def _built_by(self) -> Any:
        return self._hub.built_by

    def _fan_out(self) -> None:
        """A change: what holds for every stream checked once, then every stream offered its
        scope's snapshot (one call per stream; the same bytes to every stream of a scope)."""
        hub = self._hub
        if not hub.reachable:
            for audience in self._audience.values():
                for follower in audience:
                    follower.end(Unavailable(_CUT_OFF))
            return
        position = hub.position
        for (token_id, role), trust in self._trust.items():
            if trust.trusted_at != position:
                # The token index moved with the snapshot: one lookup per token, not stream.
                live = hub.live_subject(token_id)
                if live is None or live.role != role:
                    for follower in trust.followers:
                        try:
                            _still_valid(role, live)
                        except ConfigError as exc:
                            follower.end(exc)
                    continue
                trust.trusted_at = position
        for scope, audience in self._audience.items():
            _, entry = hub.published(scope)
            started = 0
            for follower in list(audience):
                started += follower.offer(position, entry)
            if started:
                self._sent[scope].inc(started)

    def _vouch(self) -> None:
        """Refuse to serve a snapshot this replica cannot vouch for (database unreachable)."""
        if not self._hub.reachable:
            raise Unavailable(_CUT_OFF)

    async def _resume_at(
        self, known_version: str, known_history: str, role: Role | None
    ) -> Position:
        """Where a subscriber resumes from (NOWHERE: none); never ahead of the database.

        Without `known_history` (a daemon older than histories) the version is taken to be
        of the current history. A version of the current history beyond the database's
        revision, from a daemon (which keeps the snapshot it applied), means the database
        went back (restored from an older backup while no replica watched): a new history
        starts, at most one a minute (UNAVAILABLE meanwhile: the daemon retries), and the
        subscriber is sent its snapshot. Anyone else claiming so is sent the current one.
        """
        if not known_version:
            return NOWHERE
        known = parse_version(known_version)
        if known is None:
            raise InvalidArgument("known_version", "must be empty or a snapshot version")
        known_history = check_text("known_history", known_history, MAX_VERSION)
        self._vouch()
        hub = self._hub
        try:
            if known_history != hub.history or known > hub.revision:
                # The subscriber saw a newer revision, or another history, elsewhere: catch
                # up before answering, never send it an older snapshot of its history.
                await hub.refresh_if_behind()
            restored = role in _DAEMONS and known_history == hub.history and known > hub.revision
            too_soon = restored and not await hub.diverged(known_history, known)
        except Unavailable as exc:
            raise Unavailable(_CUT_OFF) from exc
        if too_soon:
            raise Unavailable(
                "a new snapshot history was started on this replica less than "
                f"{DIVERGE_EVERY:.0f} s ago; retry"
            )
        if not known_history:
            if known > hub.revision:
                raise FailedPrecondition(
                    f"known_version {known} is newer than this service's database revision "
                    f"{hub.revision} (was the database restored or replaced?); the "
                    "subscriber keeps its snapshot: restart it without its snapshot cache "
                    "to follow, or upgrade it (a subscriber that sends known_history takes "
                    "the restored database's snapshot)"
                )
            return Position(hub.history, known)
        return Position(known_history, known)

    def _admit(self, subject: Subject) -> None:
        held = self._registry.count_for(subject.principal_id)
        if held >= self._max_streams:
            raise ResourceExhausted(
                f"principal {subject.name!r} already holds {held} watch streams on this "
                f"replica, the most AIBRIDGE_MAX_WATCH_STREAMS_PER_PRINCIPAL allows; "
                "close streams it no longer needs"
            )

    @unary(Action.READ_PROVIDERS)
    async def get_snapshot(self, request: pb.GetProviderSnapshotRequest, subject: Subject) -> bytes:
        self._vouch()
        return self._hub.entry(scope_for(subject)).payload

    @unary(Action.REPORT_STATUS)
    async def report_status(
        self, request: pb.ReportStatusRequest, subject: Subject
    ) -> pb.ReportStatusResponse:
        # Every field is checked here, before it is stored: a value the database cannot
        # hold (too long for its column, a NUL) would otherwise fail every later publish
        # of this replica's subscribers, and with it cluster-wide ListSubscribers.
        node_id = _node_id(request.node_id)
        if not node_id:
            raise InvalidArgument("node_id", "is required")
        version = check_text("version", request.version, MAX_VERSION)
        if not version:
            raise InvalidArgument("version", "is required")
        if len(request.errors) > MAX_REPORT_ERRORS:
            raise InvalidArgument("errors", f"at most {MAX_REPORT_ERRORS} entries")
        issues = [
            ProviderIssue(
                check_text(f"errors[{i}].provider_name", e.provider_name, MAX_REPORT_NAME),
                check_text(f"errors[{i}].message", e.message, MAX_REPORT_TEXT, multiline=True),
            )
            for i, e in enumerate(request.errors)
        ]
        detail = check_text("error_detail", request.error_detail, MAX_REPORT_TEXT, multiline=True)
        found = self._registry.report(
            node_id, subject.principal_id, version, request.applied, issues, detail
        )
        # Every subscriber ACKs every snapshot: a clean ACK is a debug line (at info, 10,000
        # subscribers wrote 10,000 lines per change); a NACK, errors or no matching stream
        # stay at info. Who is on which version is in ListSubscribers and the metrics.
        clean = request.applied and not issues and not detail and found
        (log.debug if clean else log.info)(
            "subscriber report",
            node_id=node_id,
            version=version,
            applied=request.applied,
            errors=len(issues),
            matched_stream=found,
        )
        return pb.ReportStatusResponse()

    @unary(Action.LIST_SUBSCRIBERS)
    async def list_subscribers(
        self, request: pb.ListSubscribersRequest, subject: Subject
    ) -> pb.ListSubscribersResponse:
        response = pb.ListSubscribersResponse()
        listed = [(self._replica_id, s) for s in self._registry.all()]
        if self._remote is not None:
            listed += [(r.replica_id, r.state) for r in await self._remote()]
        size = 0
        for replica_id, s in listed:
            subscriber = pb.Subscriber(
                node_id=s.node_id,
                role=ROLE_TO_PROTO[s.role],
                peer=s.peer,
                connected_since=_ts(s.connected_since),
                version_sent=s.version_sent,
                version_acked=s.version_acked,
                version_rejected=s.version_rejected,
                errors=[
                    pb.ProviderError(provider_name=e.provider_name, message=e.message)
                    for e in s.errors[:MAX_KEPT_ERRORS]
                ],
                errors_total=s.errors_total,
                error_detail=s.error_detail,
                last_report_at=_ts(s.last_report_at),
                replica_id=replica_id,
            )
            size += subscriber.ByteSize() + 8  # the field's tag and length
            if size > MAX_LIST_BYTES:
                response.subscribers_left_off += 1
            else:
                response.subscribers.append(subscriber)
        return response

    def handler(self) -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
        # No response serializer where the hub's bytes are sent: grpc passes them through.
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "WatchProviders": grpc.unary_stream_rpc_method_handler(
                    self.watch,
                    request_deserializer=pb.WatchProvidersRequest.FromString,
                    response_serializer=None,
                ),
                "GetProviderSnapshot": grpc.unary_unary_rpc_method_handler(
                    self.get_snapshot,
                    request_deserializer=pb.GetProviderSnapshotRequest.FromString,
                    response_serializer=None,
                ),
                "ReportStatus": grpc.unary_unary_rpc_method_handler(
                    self.report_status,
                    request_deserializer=pb.ReportStatusRequest.FromString,
                    response_serializer=pb.ReportStatusResponse.SerializeToString,
                ),
                "ListSubscribers": grpc.unary_unary_rpc_method_handler(
                    self.list_subscribers,
                    request_deserializer=pb.ListSubscribersRequest.FromString,
                    response_serializer=pb.ListSubscribersResponse.SerializeToString,
                ),
            },
        )
