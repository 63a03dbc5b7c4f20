"""`aibridge`: the one command-line entry point.

Each sub-command lives in its own module as `main(argv) -> int` and parses its own
flags, so `aibridge bridge` never imports the config service's database code and
vice versa. Modules are imported only when their command runs.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import MutableMapping

COMMANDS: dict[str, tuple[str, str]] = {
    "config-service": ("config_service.commands.serve", "run the config service (gRPC)"),
    "migrate": ("config_service.commands.migrate", "apply database migrations and exit"),
    "rotate-keys": (
        "config_service.commands.rotate_keys",
        "re-encrypt stored secrets under the first AIBRIDGE_ENCRYPTION_KEYS key",
    ),
    "tokens": ("config_service.commands.tokens", "create, list and revoke tokens"),
    "snapshot": ("aibridge.commands.snapshot", "print the current provider snapshot as JSON"),
    "providers": ("aibridge.commands.providers", "manage providers over gRPC"),
    "subscribers": ("aibridge.commands.subscribers", "list snapshot subscribers"),
    "usage": ("aibridge.commands.usage", "list, show and summarize interception records"),
    "bridge": ("data_plane.bridge.cli", "run the bridge daemon (aibridged)"),
    "proxy": ("data_plane.proxy.cli", "run the CONNECT proxy daemon (aibridgeproxyd)"),
    "console": ("console.server", "run the web console (providers, subscribers, usage, tokens)"),
    "up": (
        "aibridge.commands.up",
        "run config service, bridge, proxy and console on this machine",
    ),
}


# What a command's process needs in its environment before its modules load: grpc-core
# reads GRPC_EXPERIMENTS once, when grpc is first imported. The config service serves on
# grpc-core's promise-based HTTP/2 server transport (`ph2_server`, grpcio 1.85): per open
# stream half the memory (22 -> 10.5 KB) and less CPU per write than the default transport
# (bench/README.md, "Fan-out levers (branch fancpu)"). An operator's own value wins, and
# its workers inherit whatever this process was given.
COMMAND_ENVIRONMENT: dict[str, dict[str, str]] = {
    "config-service": {"GRPC_EXPERIMENTS": "ph2_server"},
}


def prepare_environment(name: str, environ: MutableMapping[str, str]) -> None:
    """Set `name`'s COMMAND_ENVIRONMENT in `environ` where the operator set nothing."""
    for key, value in COMMAND_ENVIRONMENT.get(name, {}).items():
        environ.setdefault(key, value)


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: aibridge <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run `aibridge <command> --help` for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"aibridge: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    prepare_environment(name, os.environ)
    module = importlib.import_module(COMMANDS[name][0])
    try:
        result: int = module.main(rest, prog=f"aibridge {name}")
    except BrokenPipeError:
        # The reader went away (`aibridge snapshot --watch | head`): stop quietly, and
        # point stdout at /dev/null so the flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return result


if __name__ == "__main__":
    sys.exit(main())
