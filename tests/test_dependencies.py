"""pyproject.toml declares what the code imports: every third-party module the packages
import comes from a declared dependency, every declared dependency is imported, the tests'
own imports are declared (runtime or dev), and no private module of a third-party
package is imported."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("aibridge", "config_service", "data_plane", "console")
GENERATED = re.compile(r"_pb2(_grpc)?\.py$")  # grpcio-tools' output imports grpc._utilities
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _distribution(requirement: str) -> str:
    """The normalised distribution name of a requirement such as `httpx[http2]>=0.27`."""
    name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _packages(distribution: str) -> set[str]:
    """What a distribution makes importable, as the outermost regular package or module
    below any namespace package: `httpx`, `google.protobuf`, `opentelemetry.sdk`."""
    try:
        files = [f for f in metadata.files(distribution) or () if ".." not in f.parts]
    except metadata.PackageNotFoundError:
        return set()
    paths = {f.as_posix() for f in files}
    found: set[str] = set()
    for file in files:
        parts, name = file.parts[:-1], file.parts[-1]
        if not name.endswith((".py", ".so", ".pyd")) or "__pycache__" in parts:
            continue
        if parts and parts[0].endswith((".dist-info", ".data", ".libs")):
            continue
        module = [*parts] if name == "__init__.py" else [*parts, name.split(".")[0]]
        for depth in range(1, len(parts) + 1):
            if "/".join(parts[:depth]) + "/__init__.py" in paths:
                module = [*parts[:depth]]
                break
        if module and module[0].isidentifier():
            found.add(".".join(module))
    return found


def _modules_of(requirements: list[str]) -> dict[str, str]:
    """Importable package -> the declared distribution that installs it. A namespace
    package several distributions share (opentelemetry) is split by their packages."""
    modules: dict[str, str] = {}
    for requirement in requirements:
        distribution = _distribution(requirement)
        for package in _packages(distribution):
            modules[package] = distribution
    return modules


def _provider(name: str, modules: dict[str, str]) -> str | None:
    """The declared distribution an imported module comes from (longest package prefix)."""
    parts = name.split(".")
    for depth in range(len(parts), 0, -1):
        found = modules.get(".".join(parts[:depth]))
        if found is not None:
            return found
    return None


def _imports(*folders: str) -> Iterator[tuple[str, str, Path]]:
    """(imported module, its top-level name, file) for every absolute import."""
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    # module.name: `from opentelemetry import trace` is opentelemetry.trace
                    names = [f"{node.module}.{alias.name}" for alias in node.names]
                else:
                    continue
                for name in names:
                    yield name, name.split(".")[0], path


def _third_party(top: str, local: set[str]) -> bool:
    return top not in sys.stdlib_module_names and top not in local


def _local_modules(*folders: str) -> set[str]:
    """Names importable from the tree itself: our packages, and the tests' helper modules."""
    names = set(PACKAGES) | {"tests"}
    for folder in folders:
        names |= {path.stem for path in (ROOT / folder).rglob("*.py")}
    return names


def test_package_imports_match_declared_dependencies() -> None:
    """Each third-party module the packages import is declared, and each declared one imported."""
    runtime = _modules_of(PROJECT["dependencies"])
    local = _local_modules()
    imported = {name: path for name, top, path in _imports(*PACKAGES) if _third_party(top, local)}
    undeclared = {
        name: str(path.relative_to(ROOT))
        for name, path in imported.items()
        if _provider(name, runtime) is None
    }
    unused = {_distribution(r) for r in PROJECT["dependencies"]} - {
        _provider(name, runtime) for name in imported
    }
    assert undeclared == {}, f"imported but not declared in [project].dependencies: {undeclared}"
    assert unused == set(), f"declared in [project].dependencies but never imported: {unused}"


def test_test_imports_are_declared() -> None:
    """Each third-party module tests, bench and scripts import is a runtime or dev dependency."""
    folders = ("tests", "bench", "scripts")
    declared = _modules_of(PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"])
    local = _local_modules(*folders)
    undeclared = {
        name: str(path.relative_to(ROOT))
        for name, top, path in _imports(*folders)
        if _third_party(top, local) and _provider(name, declared) is None
    }
    assert undeclared == {}, f"imported but not declared (dev extra): {undeclared}"


def test_no_private_module_of_a_third_party_package() -> None:
    """No import reaches into a third-party package's private module (`httpx._utils`)."""
    local = _local_modules()
    private = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for name, top, path in _imports(*PACKAGES)
        if _third_party(top, local)
        and not GENERATED.search(path.name)
        and any(part.startswith("_") and not part.startswith("__") for part in name.split("."))
    )
    assert private == []


# NamedTuple's public methods carry an underscore so as not to clash with field names.
NAMEDTUPLE_API = frozenset(("_asdict", "_replace", "_fields", "_make"))


def test_no_private_attribute_of_another_object() -> None:
    """No code reaches a private attribute of an object other than its own
    (`client._transport_for_url`): private API of a library, or of another class."""
    reached = []
    for folder in PACKAGES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if GENERATED.search(path.name):
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and node.attr not in NAMEDTUPLE_API
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                ):
                    reached.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert reached == []
