"""Declaring Prometheus series: one registry and one name prefix, one line a series.

Every process declares its series through a `Series(registry, prefix)`, so the registry,
the prefix and the multiprocess mode of a gauge are written once rather than per series.
Gauges default to `livesum` (a count summed over a daemon's live workers); per-worker state
passes `mode="liveall"` (aibridge/worker_metrics.py says how workers merge).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

GaugeMode = Literal["livesum", "liveall", "livemax"]


@dataclass(frozen=True)
class Series:
    registry: CollectorRegistry
    prefix: str = ""

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(self.prefix + name, help, labels, registry=self.registry)

    def counters(
        self, name: str, help: str, label: str, values: Sequence[str]
    ) -> dict[str, Counter]:
        """A counter with one label, as its child for each of `values` (looked up once)."""
        counter = self.counter(name, help, (label,))
        return {value: counter.labels(value) for value in values}

    def gauge(
        self, name: str, help: str, labels: Sequence[str] = (), mode: GaugeMode = "livesum"
    ) -> Gauge:
        return Gauge(
            self.prefix + name, help, labels, registry=self.registry, multiprocess_mode=mode
        )

    def histogram(
        self, name: str, help: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> Histogram:
        return Histogram(self.prefix + name, help, labels, registry=self.registry, buckets=buckets)
