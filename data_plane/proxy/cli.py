"""`aibridge proxy`: parse flags, configure logging, run `serve(settings)`."""

from __future__ import annotations

from aibridge.workers import Daemon, launch
from data_plane.daemon import load_settings
from data_plane.proxy.settings import SETTINGS, ProxySettings


def main(argv: list[str] | None = None, prog: str = "aibridge proxy") -> int:
    settings = load_settings(
        argv,
        prog,
        "Run the proxy daemon (aibridgeproxyd): a CONNECT proxy that terminates TLS for the "
        "providers' hosts and hands their requests to the bridge; every other host is "
        "tunnelled. Clients authenticate with a gateway token as the Basic password "
        "(HTTPS_PROXY=http://user:<token>@host:port), tunnels included.",
        SETTINGS,
        ProxySettings.from_env,
    )
    if settings is None:
        return 2
    from data_plane.errors import CAError
    from data_plane.proxy.server import ensure_ca, serve

    daemon = Daemon(prog, serve, "AIBRIDGE_PROXY_LISTEN", (CAError,), prepare=ensure_ca)
    return launch(daemon, settings)
