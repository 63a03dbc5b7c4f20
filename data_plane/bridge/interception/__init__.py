"""Interception records: what the bridge captures of each request it answers.

The bridge hands every finished interception to a `RecordSink` (shipping it to the
config service is `data_plane.recording`'s job). `record.py` holds the capture and the
record it becomes; `clients.py` names the client; `request.py` and `response.py` read
what the request and the answer say for the record.
"""

from __future__ import annotations

from typing import Protocol

from aibridge.config.v1 import usage_pb2


class RecordSink(Protocol):
    """Where finished interception records go."""

    def submit(self, record: usage_pb2.Interception) -> None:
        """Take one record; never blocks and never raises (the request path calls it)."""
        ...
