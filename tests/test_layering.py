"""The layers import downward only: aibridge/ below both planes, the data plane off the database."""

from __future__ import annotations

import subprocess
import sys

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


def test_aibridge_and_the_data_plane_import_no_layer_above_them() -> None:
    """Every module of aibridge/ loads neither plane; every data_plane module loads neither the
    config service nor sqlalchemy."""
    subprocess.run([sys.executable, "-c", _PROBE], check=True, timeout=120)
