"""Log lines as an operator's terminal shows them."""

from __future__ import annotations

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
