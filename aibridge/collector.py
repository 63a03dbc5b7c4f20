"""The garbage collector's tuning, one rule for every serving process.

The collector's first generation runs once YOUNG_THRESHOLD more container objects are alive
than at its last run (Python's default: 700). A serving process holds a few objects per
request or stream in flight (futures, loop handles, grpc operations, a bridge call's
capture) that reference counting frees a moment later; at the default the config service
ran the collector dozens of times per change to 10,000 streams over those live objects
(10-20 % of the fan-out's CPU), and the bridge once every few requests over the records
waiting to be shipped. Above the in-flight peak, the collector runs rarely; cyclic garbage
is still collected, in larger rounds.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 200_000


def tune_collector() -> None:
    """Freeze what start-up made, collect the young generation less often.

    Called once a process is serving: modules, descriptors, settings and the first
    snapshot are moved out of the collector's reach (gc.freeze), so a full collection
    scans only what was made while serving. Process-wide, so only a process entry point
    calls it, never the in-process `start` that tests use."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
