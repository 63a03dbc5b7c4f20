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


# grpc-core experiments a command serves with, set before the command's modules import grpc
# (grpc-core reads GRPC_EXPERIMENTS once, when it loads); its workers inherit them. The
# operator's own GRPC_EXPERIMENTS entries come after these and win: `-fuse_filters` turns
# one off, `ph2_server` adds one (docs/operations.md, "Config-service stream limits").
# fuse_filters: the server's filters run as one fused call state, ≈ 3 KB less per open
# watch stream and fewer instructions per snapshot write (bench/README.md, "Per-stream
# memory (mem)").
GRPC_EXPERIMENTS: dict[str, str] = {"config-service": "fuse_filters"}


def with_grpc_experiments(command: str, env: MutableMapping[str, str]) -> None:
    """Put `command`'s grpc-core experiments ahead of the operator's in `env` (the process
    environment, handed on whole: grpc-core's variable, not a setting of ours)."""
    ours = GRPC_EXPERIMENTS.get(command)
    if ours:
        theirs = env.get("GRPC_EXPERIMENTS", "").strip()
        env["GRPC_EXPERIMENTS"] = f"{ours},{theirs}" if theirs else ours


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
    # prometheus-client's multiprocess mode is the workers' (aibridge/workers.py names
    # their directory): one inherited from the environment would put a single daemon's
    # series in files there, or stop it when the directory is missing. Read at import.
    for variable in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
        os.environ.pop(variable, None)
    with_grpc_experiments(name, os.environ)
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
