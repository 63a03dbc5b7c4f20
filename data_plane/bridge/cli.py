"""`aibridge bridge`: parse flags, configure logging, run `serve(settings)`."""

from __future__ import annotations

from aibridge.workers import Daemon, launch
from data_plane.bridge.settings import SETTINGS, BridgeSettings
from data_plane.daemon import load_settings


def main(argv: list[str] | None = None, prog: str = "aibridge bridge") -> int:
    settings = load_settings(
        argv,
        prog,
        "Run the bridge daemon (aibridged): serves each provider's API at /<provider>/..., "
        "following the config service's snapshot stream.",
        SETTINGS,
        BridgeSettings.from_env,
    )
    if settings is None:
        return 2
    from data_plane.bridge.server import serve
    from data_plane.errors import SpoolError

    return launch(Daemon(prog, serve, "AIBRIDGE_BRIDGE_LISTEN", (SpoolError,)), settings)
