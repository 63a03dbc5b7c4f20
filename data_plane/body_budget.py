"""Request body bytes held by all requests of a daemon at once, and their deadline.

One mechanism for both daemons (the bridge's app, the proxy's h11io): a request takes
bytes from the budget as they arrive (not as declared) through its `Hold`, which
raises `BudgetFull` past the limit (answered 503 with Retry-After) and gives the bytes
back on `release()`; a body must arrive whole within `timeout` seconds (else 408).
"""

from __future__ import annotations

from data_plane.errors import BudgetFull


class BodyBudget:
    """Request body bytes held by all requests at once: at most `limit`, taken as they
    arrive; a body must arrive whole within `timeout` seconds."""

    __slots__ = ("held", "limit", "timeout")

    def __init__(self, limit: int, timeout: float) -> None:
        self.limit = limit
        self.timeout = timeout
        self.held = 0


class Hold:
    """The part of the budget one request holds; `release()` gives it back."""

    __slots__ = ("budget", "size")

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.size = 0

    def grow_to(self, size: int) -> None:
        extra = size - self.size
        if extra > 0:
            if self.budget.held + extra > self.budget.limit:
                raise BudgetFull
            self.budget.held += extra
            self.size = size

    def release(self) -> None:
        self.budget.held -= self.size
        self.size = 0
