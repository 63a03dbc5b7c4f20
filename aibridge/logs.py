"""Structured logging for every process: JSON when not a terminal, key-value otherwise.

Secrets never reach a log line: callers log `mask_secret(...)`/`Secret` values only,
and the `_redact` processor masks any event key that looks like a credential as a
second line of defence.

`AccessLog` writes a line made once per request (the bridge's `request` line) with the
same output as `get_logger(...).info(...)`, without structlog's processor chain: in JSON,
a format prebuilt per set of keys (the redaction rule applied once per set: a set with a
key that may hold a secret goes through structlog), the timestamp's seconds formatted once
a second.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

import structlog
from structlog.contextvars import get_contextvars

from aibridge.masking import mask_secret

_SENSITIVE_KEYS = ("secret", "password", "api_key", "authorization", "token_value", "access_key")


def _sensitive(key: str) -> bool:
    """Whether a value under `key` is masked (when it is a string)."""
    lowered = key.lower()
    return any(s in lowered for s in _SENSITIVE_KEYS) and not lowered.endswith(
        ("_hint", "_masked", "_id")
    )


def _redact(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if isinstance(value, str) and _sensitive(key):
            event[key] = mask_secret(value)
    return event


def _escape_controls(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Control characters in values (a client's model name, path...) shown escaped: raw,
    they would reach the operator's terminal (ANSI/OSC sequences, NUL, forged lines)."""
    for key, value in list(event.items()):
        if isinstance(value, str) and not value.isprintable():
            event[key] = "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)
    return event


class _UndecodableMetadata(logging.Filter):
    """grpcio logs each metadata value a peer sent that is not UTF-8 at ERROR, raw and with
    a traceback: a token with one bad byte would reach the log, once per call of anyone.
    Dropped: the call is answered all the same (the value is then an unknown token)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Invalid encoding on")


_UNDECODABLE = _UndecodableMetadata()


def configure(level: str = "info", fmt: str = "") -> None:
    """Configure structlog and stdlib logging once per process.

    fmt: "json", "console", or "" to choose by whether stderr is a terminal.
    """
    global _json_info, _info_enabled
    if not fmt:
        fmt = "console" if sys.stderr.isatty() else "json"
    # JSON escapes control characters itself; key-value lines need it done for them.
    renderers: list[Any] = (
        [structlog.processors.JSONRenderer()]
        if fmt == "json"
        else [_escape_controls, structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    )
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    _info_enabled = numeric <= logging.INFO
    _json_info = structlog.PrintLogger(file=sys.stderr) if fmt == "json" else None
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries that use stdlib logging (alembic, uvicorn) go to stderr at the same level.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, force=True)
    logging.getLogger("grpc._cython.cygrpc").addFilter(_UNDECODABLE)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


# Set by `configure`: the writer of JSON lines (None: another format), and whether info
# lines are written at all.
_json_info: structlog.PrintLogger | None = None
_info_enabled = True

_ENCODERS: dict[type, Callable[[Any], str]] = {
    str: json.encoder.encode_basestring_ascii,
    int: int.__repr__,
    bool: lambda v: "true" if v else "false",
}


class _Clock:
    """ISO 8601 UTC timestamps as structlog's TimeStamper(fmt="iso", utc=True) writes
    them, the date and time of day formatted once per second."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def now(self) -> str:
        second, nanos = divmod(time.time_ns(), 1_000_000_000)
        if second != self.second:
            when = datetime.datetime.fromtimestamp(second, tz=datetime.UTC)
            self.second, self.prefix = second, when.strftime("%Y-%m-%dT%H:%M:%S")
        micros = nanos // 1000
        return f"{self.prefix}.{micros:06d}Z" if micros else self.prefix + "Z"


_CLOCK = _Clock()


class AccessLog:
    """`get_logger(name).info(event, **fields)` for a line written once per request: the
    same output, rendered in JSON by a format prebuilt for the line's set of keys."""

    def __init__(self, name: str, event: str) -> None:
        self._log = get_logger(name)
        self._event = event
        self._tail = (
            f', {json.dumps("event")}: {json.dumps(event)}, "level": "info", "timestamp": "'
        )
        self._formats: dict[tuple[str, ...], tuple[str, ...] | None] = {}

    def _format(self, keys: tuple[str, ...]) -> tuple[str, ...] | None:
        """What comes before each value; None if a key may hold a secret (or is one of
        the keys the processors add): such lines go through structlog."""
        if any(_sensitive(k) for k in keys) or {"event", "level", "timestamp"} & set(keys):
            return None
        return tuple(("{" if i == 0 else ", ") + json.dumps(k) + ": " for i, k in enumerate(keys))

    def info(self, **fields: Any) -> None:
        if not _info_enabled:
            return
        keys = tuple(fields)
        if keys not in self._formats:
            self._formats[keys] = self._format(keys)
        prefixes = self._formats[keys]
        out = _json_info
        line = None
        if out is not None and prefixes is not None and keys and not get_contextvars():
            line = self._render(prefixes, fields.values())
        if out is None or line is None:
            self._log.info(self._event, **fields)
        else:
            out.msg(line)

    def _render(self, prefixes: tuple[str, ...], values: Iterable[Any]) -> str | None:
        """The JSON line; None for a value of a type the format does not encode as
        structlog's renderer would (it is left to structlog)."""
        parts = []
        for prefix, value in zip(prefixes, values, strict=True):
            encode = _ENCODERS.get(type(value))
            if encode is None:
                if type(value) is not float or value - value != 0:  # not finite
                    return None
                encode = float.__repr__
            parts.append(prefix + encode(value))
        parts.append(self._tail + _CLOCK.now() + '"}')
        return "".join(parts)
