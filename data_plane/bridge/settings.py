"""Settings of the bridge daemon, from the environment (and flags, which win).

Every bad value is collected and reported at once as one `SettingsError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from aibridge.client import CONFIG_SERVICE as CONFIG_SERVICE_TARGET
from aibridge.client import CONNECTION, config_service_tls
from aibridge.coder_options import BRIDGE_REFUSED
from aibridge.envconfig import (
    BRIDGE_LISTEN,
    LOG_FORMAT,
    LOG_LEVEL,
    LOGGING,
    WORKERS,
    Parse,
    Schema,
    Setting,
    boolean,
    duration,
    integer,
    process_id,
    text,
)
from aibridge.masking import Secret
from data_plane.daemon import (
    DUMP_DIR,
    NODE_ID,
    SNAPSHOT_CACHE,
    daemon_token,
    required_token,
)

T = TypeVar("T")
TOKEN = daemon_token("bridge")
ALLOW_BYOK = Setting(
    "AIBRIDGE_ALLOW_BYOK",
    "false: refuse clients' own provider keys on this bridge even where the config "
    "service allows them (true: as the config service decides)",
    boolean,
    "true",
    coder="ALLOW_BYOK",
)
MAX_CONNECTIONS = Setting(
    "AIBRIDGE_BRIDGE_MAX_CONNECTIONS",
    "open client connections at most (0: half the process's file descriptor limit)",
    integer(minimum=0),
    "0",
)
HEADER_TIMEOUT = Setting(
    "AIBRIDGE_BRIDGE_HEADER_TIMEOUT",
    "a request's headers must arrive within this of connecting or of the previous response",
    duration,
    "10s",
)
MAX_HEADER_BYTES = Setting(
    "AIBRIDGE_BRIDGE_MAX_HEADER_BYTES",
    "request line and headers at most",
    integer(minimum=1024),
    str(64 * 1024),
)
BODY_BUFFER_BYTES = Setting(
    "AIBRIDGE_BRIDGE_BODY_BUFFER_BYTES",
    "request body bytes held by all requests at once (134217728: 128 MiB)",
    integer(minimum=1),
    str(128 * 1024 * 1024),
)
BODY_TIMEOUT = Setting(
    "AIBRIDGE_BRIDGE_BODY_TIMEOUT",
    "a request's body must arrive whole within this of its headers (else 408)",
    duration,
    "30s",
)


def _breaker(env: str, help_text: str, parse: Parse[T], default: str) -> Setting[T]:
    """A circuit-breaker setting: Coder's name is ours without the AIBRIDGE_ prefix."""
    return Setting(env, help_text, parse, default, coder=env.removeprefix("AIBRIDGE_"))


BREAKER_ENABLED = _breaker(
    "AIBRIDGE_CIRCUIT_BREAKER_ENABLED", "enable the per-model circuit breaker", boolean, "false"
)
BREAKER_FAILURE_THRESHOLD = _breaker(
    "AIBRIDGE_CIRCUIT_BREAKER_FAILURE_THRESHOLD",
    "consecutive failures that trip",
    integer(minimum=1),
    "5",
)
BREAKER_INTERVAL = _breaker(
    "AIBRIDGE_CIRCUIT_BREAKER_INTERVAL", "closed-state failure count reset period", duration, "10s"
)
BREAKER_TIMEOUT = _breaker(
    "AIBRIDGE_CIRCUIT_BREAKER_TIMEOUT", "how long the breaker stays open", duration, "30s"
)
BREAKER_MAX_REQUESTS = _breaker(
    "AIBRIDGE_CIRCUIT_BREAKER_MAX_REQUESTS", "half-open probe requests", integer(minimum=1), "3"
)
AWS_REGION = Setting(
    "AWS_REGION",
    "Bedrock region when neither the provider nor its base URL names one",
    text,
    flagged=False,
)
AWS_DEFAULT_REGION = Setting(
    "AWS_DEFAULT_REGION", "the Bedrock region when AWS_REGION is unset too", text, flagged=False
)

# Every setting of the bridge: each one is also a flag (see cli.py) unless another tool's.
SETTINGS = (
    CONNECTION
    + Schema(
        (
            TOKEN,
            BRIDGE_LISTEN,
            ALLOW_BYOK,
            MAX_CONNECTIONS,
            HEADER_TIMEOUT,
            MAX_HEADER_BYTES,
            BODY_BUFFER_BYTES,
            BODY_TIMEOUT,
            DUMP_DIR,
            BREAKER_ENABLED,
            BREAKER_FAILURE_THRESHOLD,
            BREAKER_INTERVAL,
            BREAKER_TIMEOUT,
            BREAKER_MAX_REQUESTS,
            SNAPSHOT_CACHE,
            NODE_ID,
            WORKERS,
            AWS_REGION,
            AWS_DEFAULT_REGION,
        ),
        BRIDGE_REFUSED,
    )
    + LOGGING
)


@dataclass(frozen=True)
class BreakerSettings:
    enabled: bool
    failure_threshold: int
    interval: float
    timeout: float
    max_requests: int


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client may hold of the bridge before it has a request in flight."""

    max_connections: int  # 0: half of RLIMIT_NOFILE, read at start (see connections.py)
    header_timeout: float
    max_header_bytes: int


@dataclass(frozen=True)
class BridgeSettings:
    bridge_token: Secret
    config_service: str
    config_service_ca_file: Path | None
    config_service_cert_file: Path | None
    config_service_key_file: Path | None
    listen_host: str
    listen_port: int
    allow_byok: bool
    limits: ConnectionLimits
    body_buffer_bytes: int
    body_timeout: float
    dump_dir: Path | None
    breaker: BreakerSettings
    snapshot_cache: Path | None
    node_id: str
    log_format: str
    log_level: str
    aws_region: str  # Bedrock's fallback region (AWS_REGION, AWS_DEFAULT_REGION)
    workers: int = 1  # processes on the listen port (data_plane/workers.py)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], overrides: Mapping[str, str] | None = None
    ) -> BridgeSettings:
        v = SETTINGS.load(environ, overrides)
        token = required_token(v, TOKEN, "bridge")
        ca, cert, key = config_service_tls(v)
        v.check()
        host, port = v[BRIDGE_LISTEN]
        return cls(
            bridge_token=Secret(token),
            config_service=v[CONFIG_SERVICE_TARGET],
            config_service_ca_file=ca,
            config_service_cert_file=cert,
            config_service_key_file=key,
            listen_host=host,
            listen_port=port,
            allow_byok=v[ALLOW_BYOK],
            limits=ConnectionLimits(v[MAX_CONNECTIONS], v[HEADER_TIMEOUT], v[MAX_HEADER_BYTES]),
            body_buffer_bytes=v[BODY_BUFFER_BYTES],
            body_timeout=v[BODY_TIMEOUT],
            dump_dir=v[DUMP_DIR],
            breaker=BreakerSettings(
                v[BREAKER_ENABLED],
                v[BREAKER_FAILURE_THRESHOLD],
                v[BREAKER_INTERVAL],
                v[BREAKER_TIMEOUT],
                v[BREAKER_MAX_REQUESTS],
            ),
            snapshot_cache=v[SNAPSHOT_CACHE],
            node_id=v[NODE_ID] or process_id(),
            log_format=v[LOG_FORMAT],
            log_level=v[LOG_LEVEL],
            workers=v[WORKERS],
            aws_region=v[AWS_REGION] or v[AWS_DEFAULT_REGION],
        )
