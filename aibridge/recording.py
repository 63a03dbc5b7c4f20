"""What an interception record may hold, shared by the config service, which refuses a
record beyond these bounds, and the bridge, which keeps its records within them; and the
record id: a UUIDv7, so ids sort in time order.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from typing import Any

from aibridge.config.v1 import usage_pb2

MAX_BATCH = 5000  # records per RecordInterceptions call (and the 4 MiB message limit)
MAX_NAME = 200  # provider name, models, principal name, session id, tool names, call ids
MAX_ROUTE = 200
MAX_USER_AGENT = 512
MAX_HINT = 32
MAX_TOOL_CALLS = 128
# A token count of one record at most: far above any real count (two trillion), and low
# enough that sums stay within BIGINT: 2^22 (4 million) records at the bound before one
# could overflow (at 2^53 it was 1,024: the summaries failed, UNAVAILABLE on SQLite,
# INTERNAL on PostgreSQL, and kept failing).
MAX_TOKEN_COUNT = 2**41
MAX_PROMPT = 64 * 1024  # characters of the last user message
MAX_ARGUMENTS = 64 * 1024  # characters of one tool call's JSON arguments
# The detected client: claude-code, codex, cursor, openai-python, ... or other.
CLIENT_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*\Z")
MAX_CLIENT = 64


# The five token counts, as TokenUsage (and the interceptions table) name them.
TOKEN_KINDS = tuple(f.name for f in usage_pb2.TokenUsage.DESCRIPTOR.fields)

# The columns of a columnar batch (`InterceptionColumns`), as the bridge writes them and the
# config service reads them: one value per distinct description, then one per record.
DESCRIPTION_COLUMNS = (
    "provider_name",
    "provider_type",
    "route",
    "requested_model",
    "served_model",
    "principal_id",
    "principal_name",
    "token_id",
    "client",
    "user_agent",
    "session_id",
    "credential_kind",
    "credential_hint",
    "proxied",
)
HAPPENED_COLUMNS = (
    "id",
    "started_at",
    "first_byte_at",
    "ended_at",
    "outcome",
    "status_code",
    "attempts",
    "streamed",
)
RECORD_COLUMNS = (*HAPPENED_COLUMNS, "description", *TOKEN_KINDS)


def enum_names(enum: Any, prefix: str) -> dict[int, str]:
    """A proto enum's values by lower-case name without the prefix (OUTCOME_CANCELLED ->
    cancelled), the UNSPECIFIED zero left out: how the table, the CLI and JSON spell them."""
    return {value: name.removeprefix(prefix).lower() for name, value in enum.items() if value}


def new_record_id(now_ns: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits."""
    millis = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    value = (millis & (2**48 - 1)) << 80 | int.from_bytes(os.urandom(10)) & (2**80 - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 9562 variant
    h = f"{value:032x}"  # what str(uuid.UUID(int=value)) says, at a third of the cost
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# Columns a columnar batch may give fixed-width instead (`<name>_fixed` of
# InterceptionColumns, in `fixed_columns`: written in one copy each), and the ids as one
# text (`id_text`, ID_LENGTH characters per record).
FIXED_COLUMNS = ("started_at", "first_byte_at", "ended_at", "status_code", *TOKEN_KINDS)
ID_LENGTH = 36


def ids_to_text(ids: Sequence[str]) -> bytes | None:
    """Record ids as one ASCII text, ID_LENGTH characters each, in C passes; None when
    one is not of that length or not ASCII (then they go one by one)."""
    joined = "".join(ids)
    if len(joined) != ID_LENGTH * len(ids) or max(map(len, ids), default=0) != ID_LENGTH:
        return None
    try:
        return joined.encode("ascii")
    except UnicodeEncodeError:
        return None


def ids_from_text(raw: bytes) -> list[str]:
    """Record ids given as one text (`ids_to_text`); ValueError when it is not one."""
    if len(raw) % ID_LENGTH:
        raise ValueError(f"must be {ID_LENGTH} characters per record")
    text = raw.decode("ascii")  # UnicodeDecodeError is a ValueError
    return [text[i : i + ID_LENGTH] for i in range(0, len(text), ID_LENGTH)]
