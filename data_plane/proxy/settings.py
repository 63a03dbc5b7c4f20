"""Settings of the proxy daemon, from the environment (and flags, which win).

Every bad value is collected and reported at once as one `SettingsError`.
"""

from __future__ import annotations

import ipaddress
import resource
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from aibridge import coder_options
from aibridge.client import read_config_service, read_config_service_tls
from aibridge.envconfig import Reader, default_data_dir
from aibridge.masking import Secret
from data_plane.daemon import daemon_token, default_node_id

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# File descriptors kept for the process itself (pools, the config service, logs, files).
FD_RESERVE = 128


def default_max_connections() -> int:
    """Client connections the fd limit (RLIMIT_NOFILE) has room for: each may hold a
    second socket (its tunnel, forward or bridge connection), after a fixed reserve."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(16, (soft - FD_RESERVE) // 2)


# (ENV_NAME, help) for every setting: each one is also a flag (see cli.py).
SETTINGS: list[tuple[str, str]] = [
    (
        "AIBRIDGE_CONFIG_SERVICE",
        "config service host[:port] (default 127.0.0.1:7443; port 7443 if omitted)",
    ),
    ("AIBRIDGE_CONFIG_SERVICE_CA_FILE", "CA bundle to verify the config service (enables TLS)"),
    ("AIBRIDGE_CONFIG_SERVICE_CERT_FILE", "client certificate for mTLS to the config service"),
    ("AIBRIDGE_CONFIG_SERVICE_KEY_FILE", "client key for mTLS to the config service"),
    ("AIBRIDGE_PROXY_TOKEN", "token of the proxy principal, presented to the config service"),
    ("AIBRIDGE_PROXY_LISTEN", "proxy listen address host:port (default 127.0.0.1:8888)"),
    ("AIBRIDGE_PROXY_CA_CERT_FILE", "MITM CA certificate (default: generated in the data dir)"),
    ("AIBRIDGE_PROXY_CA_KEY_FILE", "MITM CA private key (default: generated in the data dir)"),
    ("AIBRIDGE_PROXY_BRIDGE_URL", "the bridge daemon (default http://127.0.0.1:8080)"),
    ("AIBRIDGE_PROXY_ALLOWED_PORTS", "ports CONNECT may reach (default 80,443)"),
    ("AIBRIDGE_PROXY_ALLOWED_PRIVATE_CIDRS", "private/reserved ranges tunnels may reach"),
    (
        "AIBRIDGE_PROXY_POOLED_KEYS",
        "true: intercepted requests use pooled keys; a client's own key is BYOK only with "
        "X-AIBridge-Token (default false: any key that is not a gateway token is BYOK)",
    ),
    (
        "AIBRIDGE_PROXY_MAX_CONNECTIONS",
        "client connections held at once (default: (fd limit - 128) / 2); past it the one "
        "longest waiting for a request is dropped, or the new one gets 503",
    ),
    (
        "AIBRIDGE_PROXY_IDLE_TIMEOUT",
        "drop a client silent this long: before or between requests, in a body, not reading, "
        "or a tunnel nothing went through yet (default 60s)",
    ),
    (
        "AIBRIDGE_PROXY_HEADER_TIMEOUT",
        "a request head must be complete this long after its first byte (default 10s)",
    ),
    (
        "AIBRIDGE_PROXY_MAX_HEADER_BYTES",
        "largest request head, request line and headers (default 65536; past it 431)",
    ),
    ("AIBRIDGE_DATA_DIR", "data directory (generated CA; default: a per-user directory)"),
    ("AIBRIDGE_DUMP_DIR", "write redacted request/response dumps here (empty: off)"),
    ("AIBRIDGE_SNAPSHOT_CACHE", "file (mode 0600) keeping the last good snapshot (empty: off)"),
    ("AIBRIDGE_NODE_ID", "name of this instance for the config service (default host-pid)"),
    ("AIBRIDGE_LOG_FORMAT", "json or console (default: json when not a terminal)"),
    ("AIBRIDGE_LOG_LEVEL", "debug, info, warning, error (default info)"),
]


@dataclass(frozen=True)
class ProxySettings:
    proxy_token: Secret
    config_service: str = "127.0.0.1:7443"
    config_service_ca_file: Path | None = None
    config_service_cert_file: Path | None = None
    config_service_key_file: Path | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = 8888
    ca_cert_file: Path | None = None  # None: <data_dir>/proxy-ca.pem, generated when absent
    ca_key_file: Path | None = None
    bridge_url: str = "http://127.0.0.1:8080"
    allowed_ports: frozenset[int] = frozenset({80, 443})
    allowed_private_cidrs: tuple[IPNetwork, ...] = ()
    pooled_keys: bool = False
    max_connections: int = field(default_factory=default_max_connections)
    idle_timeout: float = 60.0
    header_timeout: float = 10.0
    max_header_bytes: int = 65536
    data_dir: Path = field(default_factory=default_data_dir)
    dump_dir: Path | None = None
    snapshot_cache: Path | None = None
    node_id: str = field(default_factory=default_node_id)
    log_format: str = ""
    log_level: str = "info"

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
        r = Reader(environ, overrides, coder_options.PROXY)
        token = daemon_token(r, "AIBRIDGE_PROXY_TOKEN", "proxy")
        host, port = r.listen("AIBRIDGE_PROXY_LISTEN", "127.0.0.1:8888")
        ca, cert, key = read_config_service_tls(r)
        # The CA pair is given together (both must exist) or generated together.
        ca_cert, ca_key = r.str("AIBRIDGE_PROXY_CA_CERT_FILE"), r.str("AIBRIDGE_PROXY_CA_KEY_FILE")
        if bool(ca_cert) != bool(ca_key):
            r.problems.append(
                "AIBRIDGE_PROXY_CA_CERT_FILE and AIBRIDGE_PROXY_CA_KEY_FILE must be set together"
            )
        bridge_url = r.str("AIBRIDGE_PROXY_BRIDGE_URL", "http://127.0.0.1:8080").rstrip("/")
        parts = urlsplit(bridge_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            r.problems.append(
                f"AIBRIDGE_PROXY_BRIDGE_URL={bridge_url!r}: expected an http(s) URL of the bridge"
            )
        ports: set[int] = set()
        for item in r.csv("AIBRIDGE_PROXY_ALLOWED_PORTS", "80,443"):
            if item.isdigit() and 0 < int(item) < 65536:
                ports.add(int(item))
            else:
                r.problems.append(f"AIBRIDGE_PROXY_ALLOWED_PORTS: {item!r} is not a port number")
        cidrs: list[IPNetwork] = []
        for item in r.csv("AIBRIDGE_PROXY_ALLOWED_PRIVATE_CIDRS"):
            try:
                cidrs.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                r.problems.append(f"AIBRIDGE_PROXY_ALLOWED_PRIVATE_CIDRS: {item!r} is not a CIDR")
        pooled_keys = r.bool("AIBRIDGE_PROXY_POOLED_KEYS", False)
        max_connections = r.int("AIBRIDGE_PROXY_MAX_CONNECTIONS", 0, minimum=1)
        timeouts = {
            name: r.duration(name, default)
            for name, default in (
                ("AIBRIDGE_PROXY_IDLE_TIMEOUT", cls.idle_timeout),
                ("AIBRIDGE_PROXY_HEADER_TIMEOUT", cls.header_timeout),
            )
        }
        for name, seconds in timeouts.items():
            if seconds <= 0:
                r.problems.append(f"{name}: must be more than 0")
        max_header_bytes = r.int(
            "AIBRIDGE_PROXY_MAX_HEADER_BYTES", cls.max_header_bytes, minimum=1024
        )
        log_format, log_level = r.log_settings()
        data_dir = r.str("AIBRIDGE_DATA_DIR")
        dump = r.str("AIBRIDGE_DUMP_DIR")
        cache = r.str("AIBRIDGE_SNAPSHOT_CACHE")
        r.check()
        return cls(
            proxy_token=Secret(token),
            config_service=read_config_service(r),
            config_service_ca_file=ca,
            config_service_cert_file=cert,
            config_service_key_file=key,
            listen_host=host,
            listen_port=port,
            ca_cert_file=Path(ca_cert).expanduser() if ca_cert else None,
            ca_key_file=Path(ca_key).expanduser() if ca_key else None,
            bridge_url=bridge_url,
            allowed_ports=frozenset(ports),
            allowed_private_cidrs=tuple(cidrs),
            pooled_keys=pooled_keys,
            max_connections=max_connections or default_max_connections(),
            idle_timeout=timeouts["AIBRIDGE_PROXY_IDLE_TIMEOUT"],
            header_timeout=timeouts["AIBRIDGE_PROXY_HEADER_TIMEOUT"],
            max_header_bytes=max_header_bytes,
            data_dir=Path(data_dir).expanduser() if data_dir else default_data_dir(),
            dump_dir=Path(dump).expanduser() if dump else None,
            snapshot_cache=Path(cache).expanduser() if cache else None,
            node_id=r.str("AIBRIDGE_NODE_ID") or default_node_id(),
            log_format=log_format,
            log_level=log_level,
        )
