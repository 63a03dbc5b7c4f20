"""What the bridge and proxy daemons share at start-up: their token, node id and CLI."""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from aibridge.envconfig import Reader, SettingsError, add_env_flags, overrides_from_args
from aibridge.logs import configure
from aibridge.ports import ListenError

S = TypeVar("S")


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def daemon_token(r: Reader, name: str, role: str) -> str:
    """The daemon's own token for the config service; a clear problem when it is missing."""
    token = r.str(name)
    if not token:
        r.problems.append(
            f"{name} is not set: the {role} needs a token of the {role} role to follow the "
            f"config service (set AIBRIDGE_{role.upper()}_TOKEN on the config service too, "
            f"or create one with `aibridge tokens create --local --role {role}`)"
        )
    return token


def load_settings(
    argv: list[str] | None,
    prog: str,
    description: str,
    env_vars: list[tuple[str, str]],
    from_env: Callable[[Mapping[str, str], Mapping[str, str]], S],
) -> S | None:
    """Flags + env -> settings, logging configured; None after printing every problem."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_env_flags(parser, env_vars)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = from_env(os.environ, overrides_from_args(args, env_vars))
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
    configure(getattr(settings, "log_level", "info"), getattr(settings, "log_format", ""))
    return settings


def run(prog: str, coro: Coroutine[Any, Any, None], *fatal: type[Exception]) -> int:
    """Serve on uvloop until SIGINT/SIGTERM: 0, or 2 after one line for a start-up error.

    A port that cannot be bound (`ListenError`) and the exceptions in `fatal` are
    start-up errors the user can fix: their message is printed, never a traceback.
    """
    import uvloop

    startup_errors: tuple[type[Exception], ...] = (ListenError, *fatal)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(coro)
    except startup_errors as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    return 0
