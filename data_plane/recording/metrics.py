"""The recording series of a daemon, in that daemon's registry, under its prefix.

The two gauges are read at scrape time from the shipper (`Shipper.__init__` binds them),
so the request path never touches a metric to record.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from aibridge.series import Series

# Why records were lost: the queue was full, the spool was at its cap (or could not be
# written), the config service refused the record itself, the record alone is larger than
# a batch may be, or it was submitted after the shipper closed.
DROP_REASONS = ("queue_full", "spool_full", "rejected", "too_large", "unbuildable", "closed")
# What became of a batch: stored by the config service, an attempt that failed and will be
# retried, or written to the spool. (A damaged spool frame is a warning with its bytes: how
# many records it held cannot be known.)
BATCH_RESULTS = ("shipped", "retried", "spooled")


class RecordingMetrics:
    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        m = Series(registry, prefix)
        # Gauges: `livesum`, with workers the sum over the live ones.
        self.queue_depth = m.gauge(
            "recording_queue_depth", "Interception records in memory, waiting to be shipped."
        )
        self.spool_bytes = m.gauge(
            "recording_spool_bytes",
            "Bytes in the recording spool files (batches the config service has not stored).",
        )
        self.spool_records = m.gauge(
            "recording_spool_records",
            "Interception records in the recording spool, waiting to be replayed.",
        )
        self.batches = m.counters(
            "recording_batches",
            "Record batches: shipped (stored by the config service), retried (an attempt "
            "failed), spooled (written to the spool file).",
            "result",
            BATCH_RESULTS,
        )
        records = m.counters(
            "recording_records",
            "Records the config service acknowledged: inserted, or duplicate (a replay).",
            "result",
            ("inserted", "duplicate"),
        )
        self.inserted, self.duplicates = records["inserted"], records["duplicate"]
        self.dropped = m.counters(
            "recording_records_dropped",
            "Records lost, by reason: queue_full, spool_full (at the cap or unwritable), "
            "rejected (refused by the config service), too_large, closed (after shutdown).",
            "reason",
            DROP_REASONS,
        )
