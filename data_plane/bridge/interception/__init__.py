"""Interception records: what the bridge captures of each request it answers.

The bridge hands every finished interception to a `RecordSink` (shipping it to the
config service is `data_plane.recording`'s job). `record.py` holds the capture and the
record it becomes; `clients.py` names the client; `request.py` and `response.py` read
what the request and the answer say for the record.
"""

from __future__ import annotations

from typing import Protocol


class Record(Protocol):
    """A finished interception record: a `usage_pb2.Interception`, or the bridge's
    `record.Capture` of a request that is over (serialized only when asked)."""

    @property
    def id(self) -> str: ...

    def SerializeToString(self) -> bytes:  # usage_pb2.Interception's name
        """The record on the wire (a serialized `usage_pb2.Interception`)."""
        ...


class RecordSink(Protocol):
    """Where finished interception records go."""

    def submit(self, record: Record) -> None:
        """Take one record; never blocks and never raises (the request path calls it).
        The record is serialized later, off the request path."""
        ...
