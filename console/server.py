"""`aibridge console`: settings, the listening socket, uvicorn.

Binds its port first (a taken port fails at once, exit 2), then serves the console
app. Over TLS (AIBRIDGE_CONSOLE_TLS_CERT_FILE / _KEY_FILE) cookies are Secure and
HSTS is sent; behind a TLS-terminating proxy, serve TLS to the proxy too, or keep the
console on a loopback address.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from aibridge.client import CONNECTION, ClientSettings
from aibridge.envconfig import (
    CONSOLE_LISTEN,
    CONSOLE_SESSION_TTL,
    CONSOLE_TLS_CERT_FILE,
    CONSOLE_TLS_KEY_FILE,
    LOG_FORMAT,
    LOG_LEVEL,
    LOGGING,
    Schema,
    SettingsError,
)
from aibridge.logs import configure, get_logger
from aibridge.ports import ListenError, address, bind_tcp
from console.api import Api
from console.app import Console

log = get_logger("aibridge.console")
SETTINGS = (
    Schema((CONSOLE_LISTEN, CONSOLE_SESSION_TTL, CONSOLE_TLS_CERT_FILE, CONSOLE_TLS_KEY_FILE))
    + CONNECTION
    + LOGGING
)


@dataclass(frozen=True)
class ConsoleSettings:
    host: str
    port: int
    session_ttl: float
    tls_cert: Path | None
    tls_key: Path | None
    client: ClientSettings
    log_level: str
    log_format: str

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], overrides: Mapping[str, str] | None = None
    ) -> ConsoleSettings:
        v = SETTINGS.load(environ, overrides)
        # No token here: every call is made with the signed-in user's own token.
        client = ClientSettings.of(v, token="")
        tls_cert, tls_key = v[CONSOLE_TLS_CERT_FILE], v[CONSOLE_TLS_KEY_FILE]
        if (tls_cert is None) != (tls_key is None):
            v.problems.append(
                "AIBRIDGE_CONSOLE_TLS_CERT_FILE and AIBRIDGE_CONSOLE_TLS_KEY_FILE must be set "
                "together"
            )
        v.check()
        host, port = v[CONSOLE_LISTEN]
        return cls(
            host,
            port,
            v[CONSOLE_SESSION_TTL],
            tls_cert,
            tls_key,
            client,
            v[LOG_LEVEL],
            v[LOG_FORMAT],
        )

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def serve(settings: ConsoleSettings) -> None:
    sock = bind_tcp("AIBRIDGE_CONSOLE_LISTEN", settings.host, settings.port)
    port = sock.getsockname()[1]
    app = Console(Api(settings.client), settings.session_ttl)
    config = uvicorn.Config(
        app,
        lifespan="on",
        ws="none",
        access_log=False,
        log_config=None,
        server_header=False,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("HTTP server stopped during start-up")
        await asyncio.sleep(0.005)
    shown = address(settings.host, port)
    if settings.tls_cert is None and not _loopback(settings.host):
        log.warning(
            "console served over plain HTTP on a non-loopback address: session cookies and "
            "tokens cross the network unencrypted; set AIBRIDGE_CONSOLE_TLS_CERT_FILE and "
            "_KEY_FILE, or listen on 127.0.0.1 behind a TLS proxy",
            listen=shown,
        )
    log.info(
        "console listening",
        listen=shown,
        url=f"{settings.scheme}://{shown}",
        config_service=settings.client.target,
    )
    await task


def main(argv: list[str] | None = None, prog: str = "aibridge console") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the web console: providers, subscribers, usage and tokens in a "
        "browser, signed in with a gateway token, over the config service's gRPC API.",
    )
    SETTINGS.add_flags(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = ConsoleSettings.from_env(os.environ, SETTINGS.given(args))
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    configure(settings.log_level, settings.log_format)
    import uvloop

    try:
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(serve(settings))
    except ListenError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    return 0
