"""What the record shipper takes: anything that says its id and serializes itself as a
`usage_pb2.Interception` (the bridge's finished capture, or the message itself). Defined
here, beside the shipper, so that the shipper knows nothing of the bridge."""

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
