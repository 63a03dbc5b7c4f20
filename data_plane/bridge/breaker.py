"""Circuit breaker per (provider, route, model), after sony/gobreaker's state machine.

closed --N consecutive failures--> open --timeout--> half-open --max_requests
consecutive successes--> closed; any failure while half-open re-opens it. While closed
the failure count resets every `interval`. A failure is an upstream status in the
provider's failure set (503, 504; Anthropic adds 529). Outcomes of requests admitted in
an earlier generation (before a state change) are ignored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from aibridge.logs import get_logger
from data_plane.bridge.settings import BreakerSettings

log = get_logger(__name__)


class BreakerState(Enum):
    CLOSED = 0.0
    HALF_OPEN = 0.5
    OPEN = 1.0


@dataclass(frozen=True)
class Rejected:
    """The breaker refused the request; retry after this many seconds."""

    retry_after: int


class Breaker:
    def __init__(
        self,
        name: str,
        settings: BreakerSettings,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, BreakerState], None] | None = None,
    ) -> None:
        self.name = name
        self._s = settings
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._failures = 0  # consecutive, while closed
        self._successes = 0  # consecutive, while half-open
        self._requests = 0  # admitted, while half-open
        self._expiry = self._next_interval()

    def _next_interval(self) -> float:
        return self._clock() + self._s.interval if self._s.interval > 0 else math.inf

    @property
    def state(self) -> BreakerState:
        self._advance()
        return self._state

    def _advance(self) -> None:
        now = self._clock()
        if self._state is BreakerState.CLOSED and now >= self._expiry:
            self._new_generation(self._next_interval())
        elif self._state is BreakerState.OPEN and now >= self._expiry:
            self._set(BreakerState.HALF_OPEN, math.inf)

    def _new_generation(self, expiry: float) -> None:
        self._generation += 1
        self._failures = self._successes = self._requests = 0
        self._expiry = expiry

    def _set(self, state: BreakerState, expiry: float) -> None:
        previous, self._state = self._state, state
        self._new_generation(expiry)
        log.info(
            "circuit breaker state change",
            breaker=self.name,
            previous=previous.name.lower(),
            state=state.name.lower(),
        )
        if self._on_change is not None:
            self._on_change(self.name, state)

    def allow(self) -> int | Rejected:
        """Admit a request (returns its generation) or reject it while open/half-open-full."""
        self._advance()
        if self._state is BreakerState.OPEN:
            return Rejected(max(1, math.ceil(self._expiry - self._clock())))
        if self._state is BreakerState.HALF_OPEN:
            if self._requests >= self._s.max_requests:
                return Rejected(max(1, math.ceil(self._s.timeout)))
            self._requests += 1
        return self._generation

    def record(self, generation: int, failure: bool | None) -> None:
        """Record an admitted request's outcome; None = no outcome (client went away)."""
        self._advance()
        if generation != self._generation:
            return
        if failure is None:
            if self._state is BreakerState.HALF_OPEN and self._requests > 0:
                self._requests -= 1
            return
        if failure:
            if self._state is BreakerState.HALF_OPEN:
                self._set(BreakerState.OPEN, self._clock() + self._s.timeout)
            else:
                self._failures += 1
                if self._failures >= self._s.failure_threshold:
                    self._set(BreakerState.OPEN, self._clock() + self._s.timeout)
        elif self._state is BreakerState.HALF_OPEN:
            self._successes += 1
            if self._successes >= self._s.max_requests:
                self._set(BreakerState.CLOSED, self._next_interval())
        else:
            self._failures = 0


@dataclass(eq=False)
class BreakerSet:
    """The lazily created breakers of one provider, keyed by (route, model)."""

    provider: str
    settings: BreakerSettings
    failure_statuses: frozenset[int]
    clock: Callable[[], float] = time.monotonic
    on_change: Callable[[str, BreakerState], None] | None = None
    breakers: dict[tuple[str, str], Breaker] = field(default_factory=dict)

    def get(self, route: str, model: str) -> Breaker:
        key = (route, model)
        breaker = self.breakers.get(key)
        if breaker is None:
            breaker = Breaker(
                f"{self.provider}:{route}:{model}", self.settings, self.clock, self.on_change
            )
            self.breakers[key] = breaker
        return breaker

    def is_failure(self, status: int) -> bool:
        return status in self.failure_statuses
