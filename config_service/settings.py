"""Config-service settings (DESIGN §9): loaded from an environment mapping and flags.

`ConfigServiceSettings.from_env(environ, overrides)` validates everything up front
and raises one SettingsError listing every problem.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aibridge import coder_options
from aibridge.envconfig import Reader, default_data_dir
from aibridge.masking import Secret
from config_service.crypto import parse_keys
from config_service.store.tokens import weak_token_problem

# Every bridge shares the bridge principal (and every proxy the proxy one): the default
# must carry a whole fleet on one replica (the 10,000-subscriber target), with room.
DEFAULT_MAX_WATCH_STREAMS = 20_000

# (ENV_NAME, help): each is also a flag of `aibridge config-service` (flags win).
ENV_VARS: list[tuple[str, str]] = [
    ("AIBRIDGE_DATA_DIR", "directory for the SQLite database and generated files"),
    ("AIBRIDGE_DATABASE_URL", "SQLAlchemy URL; default SQLite in the data dir"),
    ("AIBRIDGE_GRPC_LISTEN", "gRPC listen address host:port (default 127.0.0.1:7443)"),
    ("AIBRIDGE_GRPC_TLS_CERT_FILE", "PEM certificate for TLS on the gRPC port"),
    ("AIBRIDGE_GRPC_TLS_KEY_FILE", "PEM private key for TLS on the gRPC port"),
    ("AIBRIDGE_GRPC_TLS_CLIENT_CA_FILE", "PEM CA: require client certificates (mTLS)"),
    ("AIBRIDGE_ADMIN_TOKEN", "bootstrap an owner principal with this token (32+ random chars)"),
    ("AIBRIDGE_BRIDGE_TOKEN", "bootstrap the bridge principal with this token (32+ random chars)"),
    ("AIBRIDGE_PROXY_TOKEN", "bootstrap the proxy principal with this token (32+ random chars)"),
    ("AIBRIDGE_ENCRYPTION_KEYS", "comma-separated base64 32-byte AES keys; first encrypts"),
    ("AIBRIDGE_ALLOW_BYOK", "whether keyless providers are usable through BYOK (default true)"),
    ("AIBRIDGE_METRICS_LISTEN", "Prometheus /metrics listen address; empty = off"),
    ("AIBRIDGE_RESYNC_INTERVAL", "periodic database revision check (default 5s)"),
    (
        "AIBRIDGE_MAX_WATCH_STREAMS_PER_PRINCIPAL",
        "open WatchProviders streams one principal may hold on a replica; the excess is "
        f"refused with RESOURCE_EXHAUSTED (default {DEFAULT_MAX_WATCH_STREAMS})",
    ),
    ("AIBRIDGE_REPLICA_ID", "name of this replica in ListSubscribers (default host-pid)"),
    ("AIBRIDGE_LOG_FORMAT", "json or console (default: json unless a terminal)"),
    ("AIBRIDGE_LOG_LEVEL", "debug, info, warning or error (default info)"),
]


@dataclass(frozen=True)
class ConfigServiceSettings:
    data_dir: Path
    database_url: str = field(repr=False)
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 7443
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    admin_token: Secret = Secret("")  # noqa: RUF009 - frozen, immutable
    bridge_token: Secret = Secret("")  # noqa: RUF009 - frozen, immutable
    proxy_token: Secret = Secret("")  # noqa: RUF009 - frozen, immutable
    encryption_keys: tuple[bytes, ...] = field(default=(), repr=False)
    allow_byok: bool = True
    metrics_listen: tuple[str, int] | None = None
    resync_interval: float = 5.0
    max_watch_streams_per_principal: int = DEFAULT_MAX_WATCH_STREAMS
    replica_id: str = ""
    log_format: str = ""
    log_level: str = "info"

    @property
    def grpc_target(self) -> str:
        host = f"[{self.grpc_host}]" if ":" in self.grpc_host else self.grpc_host
        return f"{host}:{self.grpc_port}"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], overrides: Mapping[str, str] | None = None
    ) -> ConfigServiceSettings:
        r = Reader(environ, overrides, coder_options.CONFIG_SERVICE)
        data_dir = Path(r.str("AIBRIDGE_DATA_DIR", str(default_data_dir()))).expanduser()
        database_url = r.str("AIBRIDGE_DATABASE_URL") or f"sqlite:///{data_dir / 'aibridge.db'}"
        if not database_url.startswith(("sqlite", "postgresql")):
            r.problems.append(
                "AIBRIDGE_DATABASE_URL: expected sqlite:///PATH or postgresql+psycopg://..."
            )
        host, port = r.listen("AIBRIDGE_GRPC_LISTEN", "127.0.0.1:7443")
        cert = r.existing_file("AIBRIDGE_GRPC_TLS_CERT_FILE")
        key = r.existing_file("AIBRIDGE_GRPC_TLS_KEY_FILE")
        client_ca = r.existing_file("AIBRIDGE_GRPC_TLS_CLIENT_CA_FILE")
        if (cert is None) != (key is None):
            r.problems.append(
                "AIBRIDGE_GRPC_TLS_CERT_FILE and AIBRIDGE_GRPC_TLS_KEY_FILE go together: set both"
            )
        if client_ca is not None and cert is None:
            r.problems.append(
                "AIBRIDGE_GRPC_TLS_CLIENT_CA_FILE (mTLS) needs "
                "AIBRIDGE_GRPC_TLS_CERT_FILE and _KEY_FILE"
            )
        keys, key_problems = parse_keys(r.str("AIBRIDGE_ENCRYPTION_KEYS"))
        r.problems.extend(key_problems)
        tokens = {}
        for name in ("AIBRIDGE_ADMIN_TOKEN", "AIBRIDGE_BRIDGE_TOKEN", "AIBRIDGE_PROXY_TOKEN"):
            value = r.str(name)
            problem = weak_token_problem(name, value) if value else None
            if problem:
                r.problems.append(problem)
            tokens[name] = Secret(value)
        if len({t.value for t in tokens.values() if t.value}) < sum(
            1 for t in tokens.values() if t.value
        ):
            r.problems.append("AIBRIDGE_ADMIN/BRIDGE/PROXY_TOKEN must all differ")
        metrics = r.str("AIBRIDGE_METRICS_LISTEN")
        metrics_listen = r.listen("AIBRIDGE_METRICS_LISTEN", metrics) if metrics else None
        resync = r.duration("AIBRIDGE_RESYNC_INTERVAL", 5.0)
        if resync <= 0:
            r.problems.append("AIBRIDGE_RESYNC_INTERVAL: must be positive")
        max_streams = r.int(
            "AIBRIDGE_MAX_WATCH_STREAMS_PER_PRINCIPAL", DEFAULT_MAX_WATCH_STREAMS, minimum=1
        )
        log_format, log_level = r.log_settings()
        allow_byok = r.bool("AIBRIDGE_ALLOW_BYOK", True)
        replica = r.str("AIBRIDGE_REPLICA_ID") or f"{socket.gethostname()}-{os.getpid()}"
        r.check()
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            grpc_host=host,
            grpc_port=port,
            tls_cert_file=cert,
            tls_key_file=key,
            tls_client_ca_file=client_ca,
            admin_token=tokens["AIBRIDGE_ADMIN_TOKEN"],
            bridge_token=tokens["AIBRIDGE_BRIDGE_TOKEN"],
            proxy_token=tokens["AIBRIDGE_PROXY_TOKEN"],
            encryption_keys=tuple(keys),
            allow_byok=allow_byok,
            metrics_listen=metrics_listen,
            resync_interval=resync,
            max_watch_streams_per_principal=max_streams,
            replica_id=replica,
            log_format=log_format,
            log_level=log_level,
        )
