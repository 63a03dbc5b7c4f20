"""One watch stream's sends, without a task turn per change.

At a change the servicer offers every open stream the snapshot of its scope (one call per
stream, in one loop callback; what can be checked once per change is checked before, not
per stream: servicers/config.py). A follower whose subscriber does not hold that position
starts the write by stepping `context.write`'s coroutine by hand: the first step submits
grpc's batch and yields the future grpc resolves when it completes, and a callback on
that future finishes the write. Per stream per change that is one loop callback instead
of two task turns (the wake-up and the write's completion) and the waiter future between
them (bench/README.md: "Fan-out levers (branch fancpu)" on the bare grpc.aio floor; "Fan-out
by instruction count (branch fanv)" for the service under callgrind, 58.1k -> 53.0k
instructions per stream per change against a task per stream). One write in flight per
stream, as grpc.aio allows: an offer made while it is in flight is kept (the latest wins)
and sent once it completes, never skipped.

A follower holds only slots (no closures, no per-instance dict): it is one of the few
Python objects a stream keeps for its whole life.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from config_service.snapshots.hub import Position
from config_service.snapshots.snapshot import SnapshotEntry

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from config_service.subscribers import SubscriberState
    from config_service.tracing import ConfigTelemetry

Write = Callable[[bytes], Coroutine[Any, Any, None]]


class Count(Protocol):
    """A counter's `inc` (prometheus-client's child), for the writes a follower starts
    after an offer (the servicer counts the writes an offer starts, once per change)."""

    def inc(self, amount: float = 1) -> None: ...


class Follower:
    """One stream's sends; `ended` holds why the stream must end (its handler awaits it)."""

    __slots__ = (
        "_loop",
        "_next",
        "_sending",
        "_sent",
        "_write",
        "_writing",
        "ended",
        "known",
        "state",
        "trace",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        write: Write,
        known: Position,
        state: SubscriberState,
        sent: Count,
        trace: Trace | None = None,
    ) -> None:
        # known: the position the subscriber holds; state: its ListSubscribers entry
        # (version_sent set as each write completes); sent: counts a write started later;
        # trace: the sends' spans, when telemetry is on.
        self.ended: asyncio.Future[None] = loop.create_future()
        self.known = known
        self.state = state
        self.trace = trace
        self._loop = loop
        self._write = write
        self._sent = sent
        self._writing: Coroutine[Any, Any, None] | None = None
        self._sending: tuple[Position, SnapshotEntry] | None = None
        self._next: tuple[Position, SnapshotEntry] | None = None  # offered during a write

    def offer(self, position: Position, entry: SnapshotEntry) -> bool:
        """Send `entry` (published at `position`) unless the subscriber holds that position;
        True when a write started now (counted by the caller). With a write in flight the
        offer waits for it (a later offer replaces it)."""
        if self._writing is not None:
            self._next = (position, entry)
            return False
        # The hub moves forward within a history or on to a new one: any other position
        # than the subscriber's is newer to it.
        if position == self.known or self.ended.done():
            return False
        self._start(position, entry)
        return True

    def end(self, exc: BaseException) -> None:
        """End the stream with `exc` (its handler raises it)."""
        if not self.ended.done():
            self.ended.set_exception(exc)

    def close(self) -> None:
        """The stream ended: drop a write in flight (its call is gone)."""
        writing, self._writing = self._writing, None
        self._next = None
        if writing is not None:
            writing.close()

    def _start(self, position: Position, entry: SnapshotEntry) -> None:
        if self.trace is not None:
            self.trace.start(not self.state.version_sent, entry.version)
        self._sending = (position, entry)
        self._writing = self._write(entry.payload)
        self._step()

    def _wrote(self, position: Position, entry: SnapshotEntry) -> None:
        """A write completed: what was sent, not what the hub holds now."""
        self._sending = None
        self.known = position
        self.state.version_sent = entry.version
        if self.trace is not None:
            self.trace.end()

    def _step(self, done: object = None) -> None:
        writing = self._writing
        if writing is None:  # closed: the batch of the dropped write fails with its call;
            # its error is taken as seen (asyncio would log it as never retrieved)
            if isinstance(done, asyncio.Future) and not done.cancelled():
                done.exception()
            return
        try:
            waiting = writing.send(None)
        except StopIteration:
            self._writing = None
            sending = self._sending
            assert sending is not None
            self._wrote(*sending)
            offered = self._next
            if offered is not None:
                self._next = None
                if self.offer(*offered):
                    self._sent.inc()
            return
        except BaseException as exc:
            self._writing = None
            self.end(exc)
            return
        if isinstance(waiting, asyncio.Future):
            waiting.add_done_callback(self._step)
        else:  # a bare yield (asyncio.sleep(0)): go on at the next loop turn
            self._loop.call_soon(self._step)


class Trace:
    """A stream's send spans (telemetry on): each send a span, a child of the rebuild
    that built its snapshot (the first send is the stream's own start: no parent)."""

    __slots__ = ("built_by", "node_id", "scope", "span", "tracing")

    def __init__(
        self, tracing: ConfigTelemetry, built_by: Callable[[], Any], node_id: str, scope: str
    ) -> None:
        self.tracing = tracing
        self.built_by = built_by  # the span context of the current snapshot's rebuild
        self.node_id = node_id
        self.scope = scope
        self.span: Span | None = None

    def start(self, first: bool, version: str) -> None:
        built = None if first else self.built_by()
        self.span = self.tracing.send(built, self.node_id, self.scope, version)

    def end(self) -> None:
        span, self.span = self.span, None
        if span is not None:
            span.end()
