"""Settings of the bridge daemon, from the environment (and flags, which win).

Every bad value is collected and reported at once as one `SettingsError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

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
    ("AIBRIDGE_ALLOW_BYOK", "accept clients' own provider keys (default true)"),
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
class BridgeSettings:
    bridge_token: Secret
    config_service: str = "127.0.0.1:7443"
    config_service_ca_file: Path | None = None
    config_service_cert_file: Path | None = None
    config_service_key_file: Path | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    allow_byok: bool = True
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
        r = Reader(environ, overrides)
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
            dump_dir=Path(dump).expanduser() if dump else None,
            breaker=breaker,
            snapshot_cache=Path(cache).expanduser() if cache else None,
            node_id=node_id,
            log_format=log_format,
            log_level=log_level,
        )
