"""What the bridge and proxy daemons share at start-up: their token, node id and CLI."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self, TypeVar

from aibridge.client import CONFIG_SERVICE, config_service_tls
from aibridge.envconfig import (
    LOG_FORMAT,
    LOG_LEVEL,
    WORKERS,
    Schema,
    Setting,
    SettingsError,
    Values,
    duration,
    integer,
    optional,
    path,
    process_id,
    role_token,
    text,
)
from aibridge.logs import configure
from aibridge.telemetry import TelemetrySettings

S = TypeVar("S")


def daemon_token(role: str) -> Setting[str]:
    """The daemon's own token for the config service (AIBRIDGE_<ROLE>_TOKEN)."""
    return role_token(role, f"token of the {role} principal, presented to the config service")


def required_token(v: Values, setting: Setting[str], role: str) -> str:
    """The token; a clear problem when it is missing."""
    token = v[setting]
    if not token:
        v.problems.append(
            f"{setting.env} is not set: the {role} needs a token of the {role} role to follow "
            f"the config service (set {setting.env} on the config service too, "
            f"or create one with `aibridge tokens create --local --role {role}`)"
        )
    return token


def request_limits(
    names: tuple[str, str, str, str], header_timeout_help: str
) -> tuple[Setting[float], Setting[int], Setting[int], Setting[float]]:
    """A daemon's request limits, named in full at the call (so grep finds them): head
    timeout, head size, body bytes held at once, body timeout. Both daemons answer them
    alike (431, 503, 408)."""
    header_timeout, max_header_bytes, body_buffer_bytes, body_timeout = names
    return (
        Setting(header_timeout, header_timeout_help, duration, "10s"),
        Setting(
            max_header_bytes,
            "largest request head, request line and headers (past it 431)",
            integer(minimum=1024),
            str(64 * 1024),
        ),
        Setting(
            body_buffer_bytes,
            "request body bytes held by all requests at once (134217728: 128 MiB; past it 503)",
            integer(minimum=1),
            str(128 * 1024 * 1024),
        ),
        Setting(
            body_timeout,
            "a request's body must arrive whole within this of its head (else 408)",
            duration,
            "30s",
        ),
    )


DUMP_DIR = Setting(
    "AIBRIDGE_DUMP_DIR",
    "write redacted request/response dumps here (empty: off)",
    optional(path),
    coder="DUMP_DIR",
)
SNAPSHOT_CACHE = Setting(
    "AIBRIDGE_SNAPSHOT_CACHE",
    "file (mode 0600) keeping the last good snapshot (empty: off)",
    optional(path),
)
NODE_ID = Setting(
    "AIBRIDGE_NODE_ID", "name of this instance for the config service (default host-pid)", text
)


# Keyword arguments for some of DaemonSettings' fields, by field name.
Fields = dict[str, Any]


def follow_fields(v: Values) -> Fields:
    """The fields that say how the daemon follows the config service; the TLS files'
    problems are added to `v.problems`."""
    ca, cert, key = config_service_tls(v)
    return dict(
        config_service=v[CONFIG_SERVICE],
        config_service_ca_file=ca,
        config_service_cert_file=cert,
        config_service_key_file=key,
        snapshot_cache=v[SNAPSHOT_CACHE],
        node_id=v[NODE_ID] or process_id(),
    )


def read(
    schema: Schema,
    environ: Mapping[str, str],
    overrides: Mapping[str, str] | None,
    token: Setting[str],
    role: str,
) -> tuple[Values, str, Fields]:
    """A daemon's settings read (flags win), its token (a problem when missing) and the
    fields of how it follows the config service."""
    v = schema.load(environ, overrides)
    return v, required_token(v, token, role), follow_fields(v)


def process_fields(v: Values, service: str) -> Fields:
    """The fields that say how the process runs: its logs, its telemetry and its workers;
    `service` is the telemetry's default service.name."""
    return dict(
        log_format=v[LOG_FORMAT],
        log_level=v[LOG_LEVEL],
        telemetry=TelemetrySettings.of(v, service),
        workers=v[WORKERS],
    )


@dataclass(frozen=True)
class DaemonSettings:
    """The fields every daemon's settings have: where it listens, how it follows the config
    service (`follow_fields`) and how its process runs (`process_fields`)."""

    listen_host: str
    listen_port: int
    config_service: str
    config_service_ca_file: Path | None
    config_service_cert_file: Path | None
    config_service_key_file: Path | None
    snapshot_cache: Path | None
    node_id: str
    log_format: str
    log_level: str
    telemetry: TelemetrySettings
    workers: int  # processes on the listen port (aibridge/workers.py)

    @property
    def instance(self) -> str:
        """The name the supervisor logs this daemon by: its node id."""
        return self.node_id

    def for_worker(self, suffix: str, port: int) -> Self:
        """These settings as one worker runs them: on the shared `port`, the node id (and
        whatever else must be the worker's own) ending in `suffix`, one process."""
        return replace(self, listen_port=port, node_id=self.node_id + suffix, workers=1)


def load_settings(
    argv: list[str] | None,
    prog: str,
    description: str,
    schema: Schema,
    from_env: Callable[[Mapping[str, str], Mapping[str, str]], S],
) -> S | None:
    """Flags + env -> settings, logging configured; None after printing every problem."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    schema.add_flags(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = from_env(os.environ, schema.given(args))
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
    configure(getattr(settings, "log_level", "info"), getattr(settings, "log_format", ""))
    return settings
