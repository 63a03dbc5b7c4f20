"""The data plane's exceptions live in one tree, data_plane/errors.py: no module defines
its own."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import data_plane
from data_plane import errors


def test_every_data_plane_exception_is_defined_in_errors() -> None:
    """No data_plane module other than data_plane.errors defines an exception class."""
    elsewhere = []
    for info in pkgutil.walk_packages(data_plane.__path__, "data_plane."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == info.name
                and info.name != errors.__name__
            ):
                elsewhere.append(f"{info.name}.{name}")
    assert elsewhere == []


def test_every_error_belongs_to_the_tree() -> None:
    """Each class in data_plane.errors descends from DataPlaneError."""
    classes = [obj for obj in vars(errors).values() if inspect.isclass(obj)]
    assert classes and all(issubclass(c, errors.DataPlaneError) for c in classes)
