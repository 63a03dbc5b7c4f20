"""`aibridge proxy`: parse flags, configure logging, run `serve(settings)`."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from aibridge.envconfig import SettingsError, add_env_flags, overrides_from_args
from aibridge.logs import configure
from data_plane.proxy.settings import SETTINGS, ProxySettings


def main(argv: list[str] | None = None, prog: str = "aibridge proxy") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the proxy daemon (aibridgeproxyd): a CONNECT proxy that terminates "
        "TLS for the providers' hosts and hands their requests to the bridge; every other "
        "host is tunnelled. Clients authenticate with a gateway token as the Basic "
        "password (HTTPS_PROXY=http://user:<token>@host:port), tunnels included.",
    )
    add_env_flags(parser, SETTINGS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = ProxySettings.from_env(os.environ, overrides_from_args(args, SETTINGS))
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    configure(settings.log_level, settings.log_format)

    import uvloop

    from data_plane.proxy.ca import CAError
    from data_plane.proxy.server import serve

    try:
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(serve(settings))
    except CAError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    return 0
