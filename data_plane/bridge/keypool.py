"""Per-provider pool of upstream API keys: primary with fallback, oldest key first.

Each request walks the pool from the first key, skipping keys that are cooling down.
A 429 cools the key for `retry-after-ms`, else `Retry-After`, else 60 s; a 401 cools it
for 60 s; any other status is not a key failure. A later cooldown never shortens a
longer one. Recovery is lazy: a key is usable again once its cooldown has passed.

When no key is usable the pool is exhausted: 429 with the shortest remaining
rate-limit cooldown as Retry-After, or 502 when every key failed authentication.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from aibridge.logs import get_logger
from aibridge.masking import mask_secret
from data_plane.errors import KeyPoolError

log = get_logger(__name__)

DEFAULT_COOLDOWN = 60.0
UNAUTHORIZED_COOLDOWN = 60.0


class KeyState(StrEnum):
    VALID = "valid"
    RATE_LIMITED = "rate_limited"
    UNAUTHORIZED = "unauthorized"


@dataclass
class _Key:
    index: int
    secret: str
    cooldown_until: float = 0.0
    reason: KeyState = KeyState.VALID

    def state(self, now: float) -> KeyState:
        return self.reason if now < self.cooldown_until else KeyState.VALID


@dataclass(frozen=True)
class Exhausted:
    """Why no key could serve: status 429 (with retry_after seconds) or 502."""

    status: int
    retry_after: int
    message: str


def retry_after_seconds(headers: Mapping[str, str], now_wall: float | None = None) -> float | None:
    """Cooldown from `retry-after-ms` (float ms), else `Retry-After` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            value = float(ms) / 1000.0
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra:
        ra = ra.strip()
        if ra.isdigit():
            return float(ra)
        try:
            when = email.utils.parsedate_to_datetime(ra)
        except (TypeError, ValueError):
            return None
        now = time.time() if now_wall is None else now_wall
        return max(0.0, when.timestamp() - now)
    return None


class KeyPool:
    """Keys of one provider with their cooldowns. Not thread-safe; one event loop."""

    def __init__(
        self,
        provider: str,
        keys: Sequence[str],
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[str, str], None] | None = None,
    ) -> None:
        if not keys:
            raise KeyPoolError("no keys")
        if len(set(keys)) != len(keys):
            raise KeyPoolError("duplicate keys")
        self.provider = provider
        self.keys: tuple[str, ...] = tuple(keys)
        # Each key's masked hint (logs, records), made once: not per request.
        self.hints: tuple[str, ...] = tuple(map(mask_secret, self.keys))
        self._entries = [_Key(i, k) for i, k in enumerate(keys)]
        self._clock = clock
        self._on_transition = on_transition

    def __len__(self) -> int:
        return len(self._entries)

    def walk(self) -> Iterator[tuple[int, str]]:
        """Usable keys in pool order, re-checked at each step (other requests may cool them)."""
        for entry in self._entries:
            if entry.state(self._clock()) is KeyState.VALID:
                yield entry.index, entry.secret

    def report(self, index: int, status: int, headers: Mapping[str, str]) -> bool:
        """Record an upstream status for a key; True when it is a key failure (try the next)."""
        if status == 429:
            cooldown = retry_after_seconds(headers)
            self._cool(
                index, DEFAULT_COOLDOWN if cooldown is None else cooldown, KeyState.RATE_LIMITED
            )
            return True
        if status == 401:
            self._cool(index, UNAUTHORIZED_COOLDOWN, KeyState.UNAUTHORIZED)
            return True
        return False

    def _cool(self, index: int, seconds: float, reason: KeyState) -> None:
        entry = self._entries[index]
        until = self._clock() + seconds
        if until <= entry.cooldown_until:
            return  # a later cooldown never shortens a longer one
        entry.cooldown_until = until
        entry.reason = reason
        log.info(
            "key cooling down",
            provider=self.provider,
            api_key_hint=mask_secret(entry.secret),
            reason=reason.value,
            seconds=round(seconds, 3),
        )
        if self._on_transition is not None:
            self._on_transition(self.provider, reason.value)

    def exhausted(self) -> Exhausted:
        """The client-facing outcome once every key has been tried or is cooling."""
        now = self._clock()
        states = [e.state(now) for e in self._entries]
        if KeyState.VALID in states:
            return Exhausted(429, 0, "rate limited: retry now")
        limited = [
            e.cooldown_until - now
            for e, s in zip(self._entries, states, strict=True)
            if s is KeyState.RATE_LIMITED
        ]
        if limited:
            wait = max(1, math.ceil(min(limited)))
            return Exhausted(429, wait, f"all configured keys are rate limited; retry in {wait}s")
        return Exhausted(
            502, 0, "all configured keys failed authentication. Contact your Administrator"
        )

    def state_counts(self) -> dict[str, int]:
        now = self._clock()
        counts = {s.value: 0 for s in KeyState}
        for entry in self._entries:
            counts[entry.state(now).value] += 1
        return counts
