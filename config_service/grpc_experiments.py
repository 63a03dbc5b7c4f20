"""The grpc-core experiments the config service serves with, set before grpc is imported.

`ph2_server`: grpc-core's promise-based HTTP/2 server transport. An open WatchProviders
stream holds ≈5 KB of grpc-core state on it instead of ≈17 KB, and a write to it costs
less CPU (bench/README.md, "Memory per stream (branch fanmem)"). grpc-core reads
GRPC_EXPERIMENTS once, when grpc is imported, so `aibridge config-service` sets it before
it imports anything that imports grpc. An operator's own GRPC_EXPERIMENTS comes after
ours, and a later entry wins: `GRPC_EXPERIMENTS=-ph2_server` serves on the previous
transport.
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping

VARIABLE = "GRPC_EXPERIMENTS"
EXPERIMENTS = ("ph2_server",)


def with_ours(given: str) -> str:
    """GRPC_EXPERIMENTS with ours first, then the operator's `given` entries (which win)."""
    return ",".join([*EXPERIMENTS, *(e for e in given.split(",") if e.strip())])


def enable(environ: MutableMapping[str, str]) -> bool:
    """Set ours in `environ` (the process's: its children inherit it) unless grpc is already
    imported in this process, where it would come too late; whether it was set."""
    if "grpc" in sys.modules:
        return False
    environ[VARIABLE] = with_ours(environ.get(VARIABLE, ""))
    return True
