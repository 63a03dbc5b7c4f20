#!/usr/bin/env python3
"""Bootstrap for a fresh clone: needs only Python >= 3.11.

    python3 dev.py up      # install into .venv, then run the whole stack (aibridge up)
    python3 dev.py test    # install into .venv, then run every quality gate and the test suite

Anything after the sub-command is passed on (to `aibridge up` or to pytest).
The virtual environment is (re)installed when pyproject.toml or constraints.txt change.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"


def _fingerprint() -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def ensure_venv() -> None:
    """Create .venv and install the project with its pinned dev tools, once per change."""
    stamp = VENV / ".aibridge-installed"
    if stamp.exists() and stamp.read_text() == _fingerprint():
        return
    if not PY.exists():
        print("dev.py: creating .venv", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    print("dev.py: installing aibridge and its pinned dependencies into .venv", file=sys.stderr)
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-c", "constraints.txt", "-e", ".[dev]"], check=True, cwd=ROOT)
    stamp.write_text(_fingerprint())


def run(*argv: str) -> int:
    print("+ " + " ".join(argv), file=sys.stderr, flush=True)
    return subprocess.call(list(argv), cwd=ROOT)


def test(extra: list[str]) -> int:
    """Every gate in turn; stop at the first that fails."""
    gates: list[tuple[str, ...]] = [
        (str(BIN / "ruff"), "check", "."),
        (str(BIN / "ruff"), "format", "--check", "."),
        (str(BIN / "mypy"),),
    ]
    for gate in gates:
        rc = run(*gate)
        if rc != 0:
            return rc
    # Stub freshness and buf lint run as tests (tests/test_api_contract.py).
    return run(str(PY), "-m", "pytest", *extra)


def main() -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs under any python3
        sys.exit("dev.py: Python >= 3.11 is required")
    if len(sys.argv) < 2 or sys.argv[1] not in ("up", "test"):
        print(__doc__, file=sys.stderr)
        return 2
    ensure_venv()
    cmd, extra = sys.argv[1], sys.argv[2:]
    if cmd == "test":
        return test(extra)
    os.execv(str(BIN / "aibridge"), [str(BIN / "aibridge"), "up", *extra])  # noqa: S606


if __name__ == "__main__":
    sys.exit(main())
