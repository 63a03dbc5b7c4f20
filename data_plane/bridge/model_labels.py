"""Bounded model names for metric labels and circuit-breaker keys.

The `model` of a request is chosen by the client, so using it as a Prometheus label or
a breaker key as-is would let any client grow the bridge's memory and /metrics without
bound. Each provider keeps the first MAX_MODELS distinct names it sees (cut to
MAX_LENGTH characters); every later new name is folded into "other".
"""

from __future__ import annotations

MAX_MODELS = 256
MAX_LENGTH = 128
OTHER = "other"


class ModelLabels:
    def __init__(self, limit: int = MAX_MODELS) -> None:
        self.limit = limit
        self._seen: dict[str, set[str]] = {}

    def label(self, provider: str, model: str) -> str:
        """The label to record for `model` on `provider`."""
        model = model[:MAX_LENGTH]
        seen = self._seen.setdefault(provider, set())
        if model in seen:
            return model
        if len(seen) < self.limit:
            seen.add(model)
            return model
        return OTHER
