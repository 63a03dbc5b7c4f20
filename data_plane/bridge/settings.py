"""Settings of the bridge daemon, from the environment (and flags, which win).

Every bad value is collected and reported at once as one `SettingsError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aibridge import coder_options
from aibridge.client import read_config_service, read_config_service_tls
from aibridge.envconfig import Reader
from aibridge.masking import Secret
from data_plane.daemon import daemon_token, default_node_id

# (ENV_NAME, help) for every setting: each one is also a flag (see cli.py).
SETTINGS: list[tuple[str, str]] = [
    (
        "AIBRIDGE_CONFIG_SERVICE",
        "config service host[:port] (default 127.0.0.1:7443; port 7443 if omitted)",
    ),
    ("AIBRIDGE_CONFIG_SERVICE_CA_FILE", "CA bundle to verify the config service (enables TLS)"),
    ("AIBRIDGE_CONFIG_SERVICE_CERT_FILE", "client certificate for mTLS to the config service"),
    ("AIBRIDGE_CONFIG_SERVICE_KEY_FILE", "client key for mTLS to the config service"),
    ("AIBRIDGE_BRIDGE_TOKEN", "token of the bridge principal, presented to the config service"),
    ("AIBRIDGE_BRIDGE_LISTEN", "HTTP listen address host:port (default 127.0.0.1:8080)"),
    (
        "AIBRIDGE_ALLOW_BYOK",
        "false: refuse clients' own provider keys on this bridge even where the config "
        "service allows them (default true: as the config service decides)",
    ),
    (
        "AIBRIDGE_BRIDGE_MAX_CONNECTIONS",
        "open client connections at most (default 0: half the process's file descriptor limit)",
    ),
    (
        "AIBRIDGE_BRIDGE_HEADER_TIMEOUT",
        "a request's headers must arrive within this of connecting or of the previous "
        "response (default 10s)",
    ),
    ("AIBRIDGE_BRIDGE_MAX_HEADER_BYTES", "request line and headers at most (default 65536)"),
    (
        "AIBRIDGE_BRIDGE_BODY_BUFFER_BYTES",
        "request body bytes held by all requests at once (default 134217728: 128 MiB)",
    ),
    ("AIBRIDGE_DUMP_DIR", "write redacted request/response dumps here (empty: off)"),
    ("AIBRIDGE_CIRCUIT_BREAKER_ENABLED", "enable the per-model circuit breaker (default false)"),
    ("AIBRIDGE_CIRCUIT_BREAKER_FAILURE_THRESHOLD", "consecutive failures that trip (default 5)"),
    ("AIBRIDGE_CIRCUIT_BREAKER_INTERVAL", "closed-state failure count reset period (default 10s)"),
    ("AIBRIDGE_CIRCUIT_BREAKER_TIMEOUT", "how long the breaker stays open (default 30s)"),
    ("AIBRIDGE_CIRCUIT_BREAKER_MAX_REQUESTS", "half-open probe requests (default 3)"),
    ("AIBRIDGE_SNAPSHOT_CACHE", "file (mode 0600) keeping the last good snapshot (empty: off)"),
    ("AIBRIDGE_NODE_ID", "name of this instance for the config service (default host-pid)"),
    ("AIBRIDGE_LOG_FORMAT", "json or console (default: json when not a terminal)"),
    ("AIBRIDGE_LOG_LEVEL", "debug, info, warning, error (default info)"),
]


@dataclass(frozen=True)
class BreakerSettings:
    enabled: bool = False
    failure_threshold: int = 5
    interval: float = 10.0
    timeout: float = 30.0
    max_requests: int = 3


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client may hold of the bridge before it has a request in flight."""

    max_connections: int = 0  # 0: half of RLIMIT_NOFILE, read at start (see connections.py)
    header_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024


@dataclass(frozen=True)
class BridgeSettings:
    bridge_token: Secret
    config_service: str = "127.0.0.1:7443"
    config_service_ca_file: Path | None = None
    config_service_cert_file: Path | None = None
    config_service_key_file: Path | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    allow_byok: bool = True
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    body_buffer_bytes: int = 128 * 1024 * 1024
    dump_dir: Path | None = None
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    snapshot_cache: Path | None = None
    node_id: str = field(default_factory=default_node_id)
    log_format: str = ""
    log_level: str = "info"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], overrides: Mapping[str, str] | None = None
    ) -> BridgeSettings:
        r = Reader(environ, overrides, coder_options.BRIDGE)
        token = daemon_token(r, "AIBRIDGE_BRIDGE_TOKEN", "bridge")
        host, port = r.listen("AIBRIDGE_BRIDGE_LISTEN", "127.0.0.1:8080")
        ca, cert, key = read_config_service_tls(r)
        breaker = BreakerSettings(
            enabled=r.bool("AIBRIDGE_CIRCUIT_BREAKER_ENABLED", False),
            failure_threshold=r.int("AIBRIDGE_CIRCUIT_BREAKER_FAILURE_THRESHOLD", 5, minimum=1),
            interval=r.duration("AIBRIDGE_CIRCUIT_BREAKER_INTERVAL", 10.0),
            timeout=r.duration("AIBRIDGE_CIRCUIT_BREAKER_TIMEOUT", 30.0),
            max_requests=r.int("AIBRIDGE_CIRCUIT_BREAKER_MAX_REQUESTS", 3, minimum=1),
        )
        header_timeout = r.duration("AIBRIDGE_BRIDGE_HEADER_TIMEOUT", 10.0)
        if header_timeout <= 0:
            r.problems.append("AIBRIDGE_BRIDGE_HEADER_TIMEOUT: must be more than 0")
        limits = ConnectionLimits(
            max_connections=r.int("AIBRIDGE_BRIDGE_MAX_CONNECTIONS", 0, minimum=0),
            header_timeout=header_timeout,
            max_header_bytes=r.int("AIBRIDGE_BRIDGE_MAX_HEADER_BYTES", 64 * 1024, minimum=1024),
        )
        body_buffer = r.int("AIBRIDGE_BRIDGE_BODY_BUFFER_BYTES", 128 * 1024 * 1024, minimum=1)
        log_format, log_level = r.log_settings()
        dump = r.str("AIBRIDGE_DUMP_DIR")
        cache = r.str("AIBRIDGE_SNAPSHOT_CACHE")
        node_id = r.str("AIBRIDGE_NODE_ID") or default_node_id()
        allow_byok = r.bool("AIBRIDGE_ALLOW_BYOK", True)
        r.check()
        return cls(
            bridge_token=Secret(token),
            config_service=read_config_service(r),
            config_service_ca_file=ca,
            config_service_cert_file=cert,
            config_service_key_file=key,
            listen_host=host,
            listen_port=port,
            allow_byok=allow_byok,
            limits=limits,
            body_buffer_bytes=body_buffer,
            dump_dir=Path(dump).expanduser() if dump else None,
            breaker=breaker,
            snapshot_cache=Path(cache).expanduser() if cache else None,
            node_id=node_id,
            log_format=log_format,
            log_level=log_level,
        )
