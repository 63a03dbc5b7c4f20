"""Structured logging for every process: JSON when not a terminal, key-value otherwise.

Secrets never reach a log line: callers log `mask_secret(...)`/`Secret` values only,
and the `_redact` processor masks any event key that looks like a credential as a
second line of defence.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from aibridge.masking import mask_secret

_SENSITIVE_KEYS = ("secret", "password", "api_key", "authorization", "token_value", "access_key")


def _redact(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        lowered = key.lower()
        if (
            isinstance(value, str)
            and any(s in lowered for s in _SENSITIVE_KEYS)
            and not lowered.endswith(("_hint", "_masked", "_id"))
        ):
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


def configure(level: str = "info", fmt: str = "") -> None:
    """Configure structlog and stdlib logging once per process.

    fmt: "json", "console", or "" to choose by whether stderr is a terminal.
    """
    if not fmt:
        fmt = "console" if sys.stderr.isatty() else "json"
    # JSON escapes control characters itself; key-value lines need it done for them.
    renderers: list[Any] = (
        [structlog.processors.JSONRenderer()]
        if fmt == "json"
        else [_escape_controls, structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    )
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
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


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
