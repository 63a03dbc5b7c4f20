"""`aibridge config-service`: run the control plane."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import Any

from config_service import grpc_experiments

# Before the imports below: they import grpc, and grpc-core reads its experiments then.
grpc_experiments.enable(os.environ)

from aibridge.ports import ListenError  # noqa: E402
from aibridge.workers import Daemon, supervise  # noqa: E402
from config_service.commands.common import failed, load, parser  # noqa: E402
from config_service.errors import ConfigError  # noqa: E402
from config_service.seed.apply import SeedConflict  # noqa: E402
from config_service.seed.env import SeedConfigError  # noqa: E402


def run(coro: Coroutine[Any, Any, None]) -> None:
    """uvloop when available: it cuts the per-stream cost of a snapshot fan-out."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def main(argv: list[str], prog: str = "aibridge config-service") -> int:
    args = parser(
        prog,
        "Run the config service: migrate and seed the database, then serve the provider "
        "snapshot stream and the admin API over gRPC. Every flag also reads from its env var.",
    ).parse_args(argv)
    settings = load(args, validate_seed=True)
    if settings is None:
        return 2
    from config_service import server

    if settings.workers > 1:
        return supervise(
            Daemon(
                prog,
                server.serve_worker,
                server.LISTEN_SETTING,
                fatal=(ConfigError, server.StartupRefused),
                prepare=server.prepare,
            ),
            settings,
        )
    try:
        run(server.serve(settings, os.environ))
    except (SeedConflict, SeedConfigError) as exc:
        print("aibridge: seeding providers from the environment failed:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        return failed("aibridge", exc)
    except ListenError as exc:
        return failed(prog, exc)
    except KeyboardInterrupt:
        pass
    return 0
