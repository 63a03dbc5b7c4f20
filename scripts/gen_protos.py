"""Regenerate the Python stubs of protos/ into the aibridge package.

Usage: python scripts/gen_protos.py [OUT_DIR]

The proto path mirrors the import path (protos/aibridge/config/v1/x.proto ->
aibridge/config/v1/x_pb2.py), so generated imports need no rewriting. The
versions of grpcio-tools and mypy-protobuf are pinned in constraints.txt; a
test regenerates into a temporary directory and diffs against the committed files.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out_dir: Path) -> list[Path]:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py(i) for every proto under protos/."""
    sources = sorted(PROTOS.rglob("*.proto"))
    well_known = Path(protoc.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(p.relative_to(PROTOS)) for p in sources),
    ]
    # The mypy plugins are console scripts beside this interpreter.
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    generated = sorted(
        p for p in (out_dir / "aibridge").rglob("*_pb2*") if p.suffix in (".py", ".pyi")
    )
    # Packages for every generated directory, so imports resolve.
    for p in generated:
        for parent in p.relative_to(out_dir).parents:
            if parent != Path("."):
                init = out_dir / parent / "__init__.py"
                if not init.exists():
                    init.write_text("")
    return generated


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for path in generate(out):
        print(path.relative_to(out))


if __name__ == "__main__":
    main()
