"""Interception records: what the bridge captures of each request it answers.

The bridge hands every finished interception to a `RecordSink` (shipping it to the
config service is `data_plane.recording`'s job). `record.py` holds the capture and the
record it becomes; `clients.py` names the client; `request.py` and `response.py` read
what the request and the answer say for the record.
"""

from __future__ import annotations

from typing import Protocol

from data_plane.recording.record import Record

__all__ = ["Record", "RecordSink"]


class RecordSink(Protocol):
    """Where finished interception records go."""

    def submit(self, record: Record) -> None:
        """Take one record (its values made, `Capture.made`); never blocks and never
        raises (the request path calls it). The record is encoded later (in a columnar
        batch), off the request path."""
        ...
