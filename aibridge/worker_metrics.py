"""The /metrics of a daemon run as several workers: every worker's series, merged.

prometheus-client's multiprocess mode. The supervising parent (aibridge/workers.py)
owns a private directory and starts each worker with PROMETHEUS_MULTIPROC_DIR naming it,
so prometheus-client keeps every value of the worker in memory-mapped files there. A
scrape, on any worker, reads all of them: counters and histograms are summed over the
workers (a dead worker's counts stay counted), gauges as their `multiprocess_mode` says:
`livesum` for counts (in flight, connections), `liveall` for per-worker state (the applied
snapshot version, provider status, reload times: one series per worker, labelled with its
pid). The parent drops a dead worker's live gauges (`mark_process_dead`).

Two additions to what the files hold:

- `<prefix>worker_info{worker, pid}`: the worker that rendered this page (so a client
  can tell which worker served it).
- collectors computed at scrape time (the bridge's key pools and breakers) are the
  serving worker's own: each worker has its own pools and breakers.

An info gauge (`..._info`, value 1) whose labels changed is set to 0 and removed; a
memory-mapped value outlives its removal, so samples of 0 of an info gauge are dropped here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from aibridge.series import Series


@dataclass(frozen=True)
class WorkerIdentity:
    """Which worker this process is, and where the workers' metric files are."""

    index: int
    metrics_dir: Path


class _Merged(Collector):
    def __init__(self, path: Path) -> None:
        self._files = MultiProcessCollector(None, path=str(path))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterator[Metric]:
        for metric in self._files.collect():  # type: ignore[no-untyped-call]
            if metric.type == "gauge" and metric.name.endswith("_info"):
                metric.samples = [s for s in metric.samples if s.value != 0]
            yield metric


class _Worker(Collector):
    def __init__(self, prefix: str, index: int) -> None:
        self._prefix = prefix
        self._index = index

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            self._prefix + "worker_info",
            "The worker process that rendered this page (value 1).",
            labels=["worker", "pid"],
        )
        info.add_metric([str(self._index), str(os.getpid())], 1)
        yield info


class DaemonMetrics:
    """A daemon's series, declared through `series`; `registry` is what /metrics renders:
    these series, or, in a worker, every worker's."""

    def __init__(self, prefix: str, worker: WorkerIdentity | None) -> None:
        own = CollectorRegistry()
        self.registry = own if worker is None else scrape_registry(worker, prefix)
        self.series = Series(own, prefix)


def scrape_registry(worker: WorkerIdentity, prefix: str) -> CollectorRegistry:
    """The registry /metrics renders on a worker: every worker's series, plus this worker."""
    registry = CollectorRegistry()
    registry.register(_Merged(worker.metrics_dir))
    registry.register(_Worker(prefix, worker.index))
    return registry
