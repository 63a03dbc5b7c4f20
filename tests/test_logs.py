"""Log lines as an operator's terminal shows them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


# Client-chosen values (a model name, a path): a terminal title (OSC), a clear screen
# (CSI), a NUL, a forged second line.
@pytest.mark.parametrize(
    "hostile",
    ["pwned\x1b]0;title\x07", "pwned\x1b[2J\x1b[31mred", "pwned\x00nul", "pwned\r\nlevel=error"],
)
def test_console_log_lines_escape_control_characters(hostile: str) -> None:
    """A console-format log line shows control characters in values escaped, never raw."""
    script = (
        "from aibridge.logs import configure, get_logger; "
        "configure('info', 'console'); "
        f"get_logger('t').info('request', model={hostile!r})"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    line = done.stderr
    assert not any(c in line for c in "\x1b\x07\x00\r"), repr(line)
    assert line.count("\n") == 1, repr(line)
    assert "pwned" in line  # shown, escaped


def _lines(script: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stderr.splitlines()


_BOTH = (
    "from aibridge.logs import AccessLog, configure, get_logger; "
    "configure({level!r}, {fmt!r}); "
    "fields = {fields}; "
    "AccessLog('t', 'request').info(**fields); "
    "get_logger('t').info('request', **fields)"
)
_FIELDS = {
    "request_id": "01JABC",
    "model": "gpt-\u00e9\x1b]0;title\x07\r\nlevel=error",
    "status": 200,
    "duration_ms": 1.25,
    "ok": True,
    "ratio": float("nan"),
    "api_key_hint": "sk-b...cdef",
}


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_access_line_is_the_structlog_line(fmt: str) -> None:
    """An access line reads as the same event logged through structlog, timestamp aside."""
    fields = repr(_FIELDS).replace("nan", "float('nan')")
    first, second = _lines(_BOTH.format(level="info", fmt=fmt, fields=fields))
    if fmt == "json":
        a, b = json.loads(first), json.loads(second)
        assert a.pop("timestamp")[:19] == b.pop("timestamp")[:19]
        assert list(a.items()) == list(b.items())
        assert first.split('"timestamp"')[0] == second.split('"timestamp"')[0]
    else:
        assert first.split(" ", 1)[1] == second.split(" ", 1)[1]


def test_access_line_masks_a_secret_and_follows_the_level() -> None:
    """A field that looks like a credential is masked on an access line too, and no access
    line is written above level info."""
    secret = "sk-live-0123456789abcdefghij"
    fields = repr({"secret": secret})
    lines = _lines(_BOTH.format(level="info", fmt="json", fields=fields))
    assert len(lines) == 2 and not any(secret in line for line in lines)
    assert json.loads(lines[0])["secret"] == json.loads(lines[1])["secret"]
    assert _lines(_BOTH.format(level="warning", fmt="json", fields=fields)) == []
