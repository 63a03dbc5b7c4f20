"""`aibridge bridge`: parse flags, configure logging, run `serve(settings)`."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from aibridge.envconfig import SettingsError, add_env_flags, overrides_from_args
from aibridge.logs import configure
from data_plane.bridge.settings import SETTINGS, BridgeSettings


def main(argv: list[str] | None = None, prog: str = "aibridge bridge") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the bridge daemon (aibridged): serves each provider's API at "
        "/<provider>/..., following the config service's snapshot stream.",
    )
    add_env_flags(parser, SETTINGS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = BridgeSettings.from_env(os.environ, overrides_from_args(args, SETTINGS))
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    configure(settings.log_level, settings.log_format)

    import uvloop

    from data_plane.bridge.server import serve

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(settings))
    return 0
