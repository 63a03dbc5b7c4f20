"""The layers import downward only: `aibridge/` (shared by both planes) never imports a plane,
and the config service and the data plane never import each other.

Every module's imports are read from its AST (function-level and relative imports included), so
an import added anywhere is checked without running it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Package (or module) prefix -> the first-party prefixes its modules may import. The longest
# matching key applies, so a sub-package can be held to a narrower rule than its parent.
ALLOWED: dict[str, tuple[str, ...]] = {
    "aibridge": ("aibridge",),
    "config_service": ("aibridge", "config_service"),
    "data_plane": ("aibridge", "data_plane"),
    # The web console is one more client of the gRPC API: never the database, never a daemon.
    "console": ("aibridge", "console"),
    # The record shipper rides on the subscriber's connection; it knows nothing of the bridge.
    "data_plane.recording": (
        "aibridge",
        "data_plane.recording",
        "data_plane.subscriber",
        "data_plane.errors",
    ),
}
FIRST_PARTY = tuple(ALLOWED)
# Within the data plane the two daemons share code only through data_plane's own modules
# (data_plane/transport/, follow.py, ...): neither imports the other's package.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "data_plane.bridge": ("data_plane.proxy",),
    "data_plane.proxy": ("data_plane.bridge",),
}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file at `path`."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def rule_for(module: str) -> tuple[str, ...]:
    key = max((k for k in ALLOWED if _within(module, k)), key=len)
    return ALLOWED[key]


def violations(paths: list[Path]) -> list[str]:
    problems = []
    for path in paths:
        module = module_name(path)
        allowed = rule_for(module)
        forbidden = [f for k, fs in FORBIDDEN.items() if _within(module, k) for f in fs]
        for line, name in imported(path):
            first_party = any(_within(name, p) for p in FIRST_PARTY)
            sideways = any(_within(name, f) for f in forbidden)
            if first_party and (sideways or not any(_within(name, a) for a in allowed)):
                problems.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {name}")
    return problems


def sources() -> list[Path]:
    return sorted(p for package in FIRST_PARTY for p in (ROOT / package).rglob("*.py"))


def test_every_module_imports_only_what_its_layer_allows() -> None:
    """No module of aibridge/, config_service/ or data_plane/ imports a layer above or beside it."""
    paths = sources()
    assert len(paths) > 50, "the source tree was not found"
    assert violations(paths) == []


@pytest.mark.parametrize(
    ("where", "source", "offender"),
    [
        ("aibridge/x.py", "import config_service.server\n", "config_service.server"),
        ("aibridge/commands/x.py", "def f():\n    from data_plane import daemon\n", "data_plane"),
        ("data_plane/bridge/x.py", "from config_service.views import evaluate\n", "config_service"),
        ("config_service/store/x.py", "import data_plane.families as f\n", "data_plane.families"),
        ("data_plane/proxy/x.py", "from data_plane.bridge import app\n", "data_plane.bridge"),
        ("data_plane/bridge/x.py", "from ..proxy.relay import relay\n", "data_plane.proxy.relay"),
    ],
)
def test_an_upward_or_sideways_import_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, source: str, offender: str
) -> None:
    """A plane imported from below (even inside a function or relatively) is named with its line."""
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    path = tmp_path / where
    path.parent.mkdir(parents=True)
    path.write_text(source)
    (problem,) = violations([path])
    assert problem.startswith(f"{where}:")
    assert f"imports {offender}" in problem


def test_imports_within_a_layer_and_below_it_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Downward and same-layer imports, absolute or relative, are not reported."""
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    path = tmp_path / "data_plane" / "bridge" / "x.py"
    path.parent.mkdir(parents=True)
    path.write_text("import aibridge.logs\nfrom . import routing\nfrom ..follow import Follower\n")
    assert violations([path]) == []


# Imports every module of a package, then lists the loaded top-level packages it may not use.
_PROBE = """
import importlib, pkgutil, sys

def load(package, forbidden):
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        importlib.import_module(info.name)
    return sorted({m.split(".")[0] for m in sys.modules} & forbidden)

# aibridge first: it must load neither plane, so it is imported before either is.
assert not (bad := load("aibridge", {"config_service", "data_plane"})), ("aibridge", bad)
assert not (bad := load("data_plane", {"config_service", "sqlalchemy"})), ("data_plane", bad)
"""


def test_loading_a_layer_loads_nothing_above_it() -> None:
    """Every module of aibridge/ loads neither plane; every data_plane module loads neither the
    config service nor sqlalchemy."""
    subprocess.run([sys.executable, "-c", _PROBE], check=True, timeout=120)
