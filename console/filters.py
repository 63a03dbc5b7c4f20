"""How the pages show values of the API: timestamps, enum names, counts (Jinja filters)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jinja2
from google.protobuf.timestamp_pb2 import Timestamp

from aibridge.config.v1 import provider_pb2, token_pb2, usage_pb2
from aibridge.recording import enum_names
from aibridge.rulebook import type_name

ROLES = enum_names(token_pb2.Role, "ROLE_")
STATUSES = enum_names(provider_pb2.ProviderStatus, "PROVIDER_STATUS_")
OUTCOMES = enum_names(usage_pb2.Outcome, "OUTCOME_")
CREDENTIALS = enum_names(usage_pb2.CredentialKind, "CREDENTIAL_KIND_")


def is_set(ts: Timestamp) -> bool:
    return bool(ts.seconds or ts.nanos)


def when(ts: Timestamp) -> str:
    """UTC, to the second; empty when unset."""
    if not is_set(ts):
        return ""
    return ts.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(ts: Timestamp) -> str:
    return ts.ToDatetime(tzinfo=UTC).isoformat() if is_set(ts) else ""


def millis_between(start: Timestamp, end: Timestamp) -> str:
    if not (is_set(start) and is_set(end)):
        return ""
    delta = end.ToDatetime(tzinfo=UTC) - start.ToDatetime(tzinfo=UTC)
    return f"{delta.total_seconds() * 1000:.0f} ms"


def since(ts: Timestamp, now: datetime | None = None) -> str:
    """How long ago, coarsely: 42s, 5m, 3h, 2d."""
    if not is_set(ts):
        return ""
    seconds = int(((now or datetime.now(UTC)) - ts.ToDatetime(tzinfo=UTC)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def count(value: int) -> str:
    return f"{value:,}"


def install(env: jinja2.Environment) -> None:
    filters: dict[str, Any] = {
        "when": when,
        "iso": iso,
        "since": since,
        "count": count,
        "role": lambda v: ROLES.get(v, "unknown"),
        "status": lambda v: STATUSES.get(v, "unknown"),
        "outcome": lambda v: OUTCOMES.get(v, "unknown"),
        "credential": lambda v: CREDENTIALS.get(v, ""),
        "ptype": type_name,
        "millis_between": millis_between,
    }
    env.filters.update(filters)
    env.tests["set"] = is_set
