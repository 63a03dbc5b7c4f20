"""Config-service settings (DESIGN §9): loaded from an environment mapping and flags.

`ConfigServiceSettings.from_env(environ, overrides)` validates everything up front
and raises one SettingsError listing every problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Self

from aibridge.envconfig import (
    DATA_DIR,
    GRPC_LISTEN,
    LOG_FORMAT,
    LOG_LEVEL,
    OTEL,
    WORKERS,
    XDG_DATA_HOME,
    Schema,
    Setting,
    Values,
    address,
    boolean,
    duration,
    integer,
    optional,
    process_id,
    resolve_data_dir,
    role_token,
    seconds,
    text,
)
from aibridge.envconfig import existing_file as file
from aibridge.masking import Secret
from aibridge.telemetry import TelemetrySettings
from config_service.crypto import parse_keys
from config_service.store.tokens import weak_token_problem

# Every bridge shares the bridge principal (and every proxy the proxy one): the default
# must carry a whole fleet on one replica (the 10,000-subscriber target), with room.
DEFAULT_MAX_WATCH_STREAMS = 20_000


def database_url(value: str) -> str:
    if not value.startswith(("sqlite", "postgresql")):
        raise ValueError("expected sqlite:///PATH or postgresql+psycopg://...")
    return value


def _token(role: str) -> Setting[str]:
    return role_token(role, f"bootstrap the {role} principal with this token (32+ random chars)")


DATABASE_URL = Setting(
    "AIBRIDGE_DATABASE_URL",
    "SQLAlchemy URL (default: SQLite aibridge.db in the data dir)",
    optional(database_url),
    secret=True,  # may hold a password
)
TLS_CERT_FILE = Setting(
    "AIBRIDGE_GRPC_TLS_CERT_FILE", "PEM certificate for TLS on the gRPC port", optional(file)
)
TLS_KEY_FILE = Setting(
    "AIBRIDGE_GRPC_TLS_KEY_FILE", "PEM private key for TLS on the gRPC port", optional(file)
)
TLS_CLIENT_CA_FILE = Setting(
    "AIBRIDGE_GRPC_TLS_CLIENT_CA_FILE",
    "PEM CA: require client certificates (mTLS)",
    optional(file),
)
TOKENS = {role: _token(role) for role in ("admin", "bridge", "proxy")}
ENCRYPTION_KEYS = Setting(
    "AIBRIDGE_ENCRYPTION_KEYS",
    "comma-separated base64 32-byte AES keys; first encrypts",
    text,
    secret=True,
)
ALLOW_BYOK = Setting(
    "AIBRIDGE_ALLOW_BYOK",
    "whether keyless providers are usable through BYOK",
    boolean,
    "true",
    coder="ALLOW_BYOK",
)
METRICS_LISTEN = Setting(
    "AIBRIDGE_METRICS_LISTEN", "Prometheus /metrics listen address; empty = off", optional(address)
)
RESYNC_INTERVAL = Setting(
    "AIBRIDGE_RESYNC_INTERVAL", "periodic database revision check", duration, "5s"
)
MAX_WATCH_STREAMS = Setting(
    "AIBRIDGE_MAX_WATCH_STREAMS_PER_PRINCIPAL",
    "open WatchProviders streams one principal may hold on a replica; the excess is "
    "refused with RESOURCE_EXHAUSTED",
    integer(minimum=1),
    str(DEFAULT_MAX_WATCH_STREAMS),
)
USAGE_RETENTION = Setting(
    "AIBRIDGE_USAGE_RETENTION",
    "how long interception records are kept, e.g. 30d or 12h; 0 keeps them forever",
    seconds,
    "30d",
)
USAGE_PRUNE_INTERVAL = Setting(
    "AIBRIDGE_USAGE_PRUNE_INTERVAL",
    "how often records past the retention are deleted, in batches",
    duration,
    "10m",
)
REPLICA_ID = Setting(
    "AIBRIDGE_REPLICA_ID", "name of this replica in ListSubscribers (default host-pid)", text
)

# Each is also a flag of `aibridge config-service` (flags win).
SETTINGS = (
    Schema(
        (
            DATA_DIR,
            XDG_DATA_HOME,
            DATABASE_URL,
            GRPC_LISTEN,
            TLS_CERT_FILE,
            TLS_KEY_FILE,
            TLS_CLIENT_CA_FILE,
            *TOKENS.values(),
            ENCRYPTION_KEYS,
            ALLOW_BYOK,
            METRICS_LISTEN,
            RESYNC_INTERVAL,
            MAX_WATCH_STREAMS,
            USAGE_RETENTION,
            USAGE_PRUNE_INTERVAL,
            REPLICA_ID,
            WORKERS,
            LOG_FORMAT,
            LOG_LEVEL,
        )
    )
    + OTEL
)


def _tls(v: Values) -> tuple[Path | None, Path | None, Path | None]:
    cert, key, client_ca = v[TLS_CERT_FILE], v[TLS_KEY_FILE], v[TLS_CLIENT_CA_FILE]
    if (cert is None) != (key is None):
        v.problems.append(
            "AIBRIDGE_GRPC_TLS_CERT_FILE and AIBRIDGE_GRPC_TLS_KEY_FILE go together: set both"
        )
    if client_ca is not None and cert is None:
        v.problems.append(
            "AIBRIDGE_GRPC_TLS_CLIENT_CA_FILE (mTLS) needs "
            "AIBRIDGE_GRPC_TLS_CERT_FILE and _KEY_FILE"
        )
    return cert, key, client_ca


def _tokens(v: Values) -> dict[str, Secret]:
    """The bootstrap tokens by role; each strong enough, and all different."""
    tokens = {}
    for role, setting in TOKENS.items():
        value = v[setting]
        problem = weak_token_problem(setting.env, value) if value else None
        if problem:
            v.problems.append(problem)
        tokens[role] = Secret(value)
    given = [t.value for t in tokens.values() if t.value]
    if len(set(given)) < len(given):
        v.problems.append("AIBRIDGE_ADMIN/BRIDGE/PROXY_TOKEN must all differ")
    return tokens


@dataclass(frozen=True)
class ConfigServiceSettings:
    data_dir: Path
    database_url: str = field(repr=False)
    grpc_host: str
    grpc_port: int
    tls_cert_file: Path | None
    tls_key_file: Path | None
    tls_client_ca_file: Path | None
    admin_token: Secret
    bridge_token: Secret
    proxy_token: Secret
    encryption_keys: tuple[bytes, ...] = field(repr=False)
    allow_byok: bool
    metrics_listen: tuple[str, int] | None
    resync_interval: float
    max_watch_streams_per_principal: int
    usage_retention: float
    usage_prune_interval: float
    replica_id: str
    log_format: str
    log_level: str
    telemetry: TelemetrySettings
    workers: int = 1  # serving processes on the gRPC port (aibridge/workers.py)

    # What the supervisor (aibridge/workers.py) reads: where it listens, and its name.
    @property
    def listen_host(self) -> str:
        return self.grpc_host

    @property
    def listen_port(self) -> int:
        return self.grpc_port

    @property
    def instance(self) -> str:
        return self.replica_id

    def for_worker(self, suffix: str, port: int) -> Self:
        """These settings as one worker runs them: on the shared `port`, replica id + `suffix`,
        one process."""
        return replace(self, grpc_port=port, replica_id=self.replica_id + suffix, workers=1)

    @property
    def grpc_target(self) -> str:
        host = f"[{self.grpc_host}]" if ":" in self.grpc_host else self.grpc_host
        return f"{host}:{self.grpc_port}"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], overrides: Mapping[str, str] | None = None
    ) -> ConfigServiceSettings:
        v = SETTINGS.load(environ, overrides)
        directory = resolve_data_dir(v)
        cert, key, client_ca = _tls(v)
        keys, key_problems = parse_keys(v[ENCRYPTION_KEYS])
        v.problems.extend(key_problems)
        tokens = _tokens(v)
        v.check()
        host, port = v[GRPC_LISTEN]
        return cls(
            data_dir=directory,
            database_url=v[DATABASE_URL] or f"sqlite:///{directory / 'aibridge.db'}",
            grpc_host=host,
            grpc_port=port,
            tls_cert_file=cert,
            tls_key_file=key,
            tls_client_ca_file=client_ca,
            admin_token=tokens["admin"],
            bridge_token=tokens["bridge"],
            proxy_token=tokens["proxy"],
            encryption_keys=tuple(keys),
            allow_byok=v[ALLOW_BYOK],
            metrics_listen=v[METRICS_LISTEN],
            resync_interval=v[RESYNC_INTERVAL],
            max_watch_streams_per_principal=v[MAX_WATCH_STREAMS],
            usage_retention=v[USAGE_RETENTION],
            usage_prune_interval=v[USAGE_PRUNE_INTERVAL],
            replica_id=v[REPLICA_ID] or process_id(),
            log_format=v[LOG_FORMAT],
            log_level=v[LOG_LEVEL],
            telemetry=TelemetrySettings.of(v, "aibridge-config-service"),
            workers=v[WORKERS],
        )
