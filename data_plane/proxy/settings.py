"""Settings of the proxy daemon, from the environment (and flags, which win).

Every bad value is collected and reported at once as one `SettingsError`.
"""

from __future__ import annotations

import resource
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from aibridge.client import CONNECTION
from aibridge.coder_options import PROXY_REFUSED
from aibridge.envconfig import (
    DATA_DIR,
    LOGGING,
    OTEL,
    PROXY_LISTEN,
    WORKERS,
    XDG_DATA_HOME,
    IPNetwork,
    Schema,
    Setting,
    boolean,
    cidr,
    duration,
    http_url,
    integer,
    items,
    optional,
    path,
    port,
    resolve_data_dir,
)
from aibridge.masking import Secret
from data_plane import daemon

# File descriptors kept for the process itself (pools, the config service, logs, files).
FD_RESERVE = 128


def default_max_connections() -> int:
    """Client connections the fd limit (RLIMIT_NOFILE) has room for: each may hold a
    second socket (its tunnel, forward or bridge connection), after a fixed reserve."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(16, (soft - FD_RESERVE) // 2)


TOKEN = daemon.daemon_token("proxy")
CA_CERT_FILE = Setting(
    "AIBRIDGE_PROXY_CA_CERT_FILE",
    "MITM CA certificate (default: generated in the data dir)",
    optional(path),
    coder="PROXY_CERT_FILE",
)
CA_KEY_FILE = Setting(
    "AIBRIDGE_PROXY_CA_KEY_FILE",
    "MITM CA private key (default: generated in the data dir)",
    optional(path),
    coder="PROXY_KEY_FILE",
)
BRIDGE_URL = Setting(
    "AIBRIDGE_PROXY_BRIDGE_URL", "the bridge daemon", http_url, "http://127.0.0.1:8080"
)
ALLOWED_PORTS = Setting(
    "AIBRIDGE_PROXY_ALLOWED_PORTS", "ports CONNECT may reach", items(port), "80,443"
)
ALLOWED_PRIVATE_CIDRS = Setting(
    "AIBRIDGE_PROXY_ALLOWED_PRIVATE_CIDRS",
    "private/reserved ranges tunnels may reach",
    items(cidr),
    coder="PROXY_ALLOWED_PRIVATE_CIDRS",
)
POOLED_KEYS = Setting(
    "AIBRIDGE_PROXY_POOLED_KEYS",
    "true: intercepted requests use pooled keys; a client's own key is BYOK only with "
    "X-AIBridge-Token (false: any key that is not a gateway token is BYOK)",
    boolean,
    "false",
)
MAX_CONNECTIONS = Setting(
    "AIBRIDGE_PROXY_MAX_CONNECTIONS",
    "client connections held at once (default: (fd limit - 128) / 2); past it the one "
    "longest waiting for a request is dropped, or the new one gets 503",
    optional(integer(minimum=1)),
)
IDLE_TIMEOUT = Setting(
    "AIBRIDGE_PROXY_IDLE_TIMEOUT",
    "drop a client silent this long: before or between requests, in a body, not reading, "
    "or a tunnel nothing went through yet",
    duration,
    "60s",
)
HEADER_TIMEOUT, MAX_HEADER_BYTES, BODY_BUFFER_BYTES, BODY_TIMEOUT = daemon.request_limits(
    (
        "AIBRIDGE_PROXY_HEADER_TIMEOUT",
        "AIBRIDGE_PROXY_MAX_HEADER_BYTES",
        "AIBRIDGE_PROXY_BODY_BUFFER_BYTES",
        "AIBRIDGE_PROXY_BODY_TIMEOUT",
    ),
    "a request head must be complete this long after its first byte",
)

# Every setting of the proxy: each one is also a flag (see cli.py) unless another tool's.
SETTINGS = (
    CONNECTION
    + Schema(
        (
            TOKEN,
            replace(PROXY_LISTEN, coder="PROXY_LISTEN_ADDR"),
            CA_CERT_FILE,
            CA_KEY_FILE,
            BRIDGE_URL,
            ALLOWED_PORTS,
            ALLOWED_PRIVATE_CIDRS,
            POOLED_KEYS,
            MAX_CONNECTIONS,
            IDLE_TIMEOUT,
            HEADER_TIMEOUT,
            MAX_HEADER_BYTES,
            BODY_BUFFER_BYTES,
            BODY_TIMEOUT,
            DATA_DIR,
            XDG_DATA_HOME,
            replace(daemon.DUMP_DIR, coder="PROXY_DUMP_DIR"),
            daemon.SNAPSHOT_CACHE,
            daemon.NODE_ID,
            WORKERS,
        ),
        PROXY_REFUSED,
    )
    + LOGGING
    + OTEL
)


@dataclass(frozen=True)
class ProxySettings(daemon.DaemonSettings):
    proxy_token: Secret
    data_dir: Path
    ca_cert_file: Path | None  # None: <data_dir>/proxy-ca.pem, generated when absent
    ca_key_file: Path | None
    bridge_url: str
    allowed_ports: frozenset[int]
    allowed_private_cidrs: tuple[IPNetwork, ...]
    pooled_keys: bool
    max_connections: int
    idle_timeout: float
    header_timeout: float
    max_header_bytes: int
    body_buffer_bytes: int
    body_timeout: float
    dump_dir: Path | None

    @property
    def ca_paths(self) -> tuple[Path, Path]:
        """Where the CA certificate and key are read from (or generated into)."""
        return (
            self.ca_cert_file or self.data_dir / "proxy-ca.pem",
            self.ca_key_file or self.data_dir / "proxy-ca-key.pem",
        )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], overrides: Mapping[str, str] | None = None
    ) -> ProxySettings:
        v, token, follow = daemon.read(SETTINGS, environ, overrides, TOKEN, "proxy")
        # The CA pair is given together (both must exist) or generated together.
        if (v[CA_CERT_FILE] is None) != (v[CA_KEY_FILE] is None):
            v.problems.append(
                "AIBRIDGE_PROXY_CA_CERT_FILE and AIBRIDGE_PROXY_CA_KEY_FILE must be set together"
            )
        v.check()
        host, listen_port = v[PROXY_LISTEN]
        return cls(
            proxy_token=Secret(token),
            data_dir=resolve_data_dir(v),
            **follow,
            listen_host=host,
            listen_port=listen_port,
            ca_cert_file=v[CA_CERT_FILE],
            ca_key_file=v[CA_KEY_FILE],
            bridge_url=v[BRIDGE_URL],
            allowed_ports=frozenset(v[ALLOWED_PORTS]),
            allowed_private_cidrs=v[ALLOWED_PRIVATE_CIDRS],
            pooled_keys=v[POOLED_KEYS],
            max_connections=v[MAX_CONNECTIONS] or default_max_connections(),
            idle_timeout=v[IDLE_TIMEOUT],
            header_timeout=v[HEADER_TIMEOUT],
            max_header_bytes=v[MAX_HEADER_BYTES],
            body_buffer_bytes=v[BODY_BUFFER_BYTES],
            body_timeout=v[BODY_TIMEOUT],
            dump_dir=v[daemon.DUMP_DIR],
            **daemon.process_fields(v, "aibridge-proxy"),
        )
