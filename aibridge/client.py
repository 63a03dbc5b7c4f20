"""gRPC client side for the CLI: settings, channel (TLS/mTLS), bearer metadata, errors.

Settings: AIBRIDGE_CONFIG_SERVICE (host:port), AIBRIDGE_CONFIG_SERVICE_CA_FILE (TLS),
AIBRIDGE_CONFIG_SERVICE_CERT_FILE / _KEY_FILE (client certificate for mTLS), and the
token: AIBRIDGE_TOKEN, falling back to AIBRIDGE_ADMIN_TOKEN.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from aibridge.envconfig import Reader

CLIENT_ENV_VARS: list[tuple[str, str]] = [
    (
        "AIBRIDGE_CONFIG_SERVICE",
        "config service host[:port] (default 127.0.0.1:7443; port 7443 if omitted)",
    ),
    ("AIBRIDGE_CONFIG_SERVICE_CA_FILE", "PEM CA to verify the config service (enables TLS)"),
    ("AIBRIDGE_CONFIG_SERVICE_CERT_FILE", "PEM client certificate for mTLS"),
    ("AIBRIDGE_CONFIG_SERVICE_KEY_FILE", "PEM client key for mTLS"),
    ("AIBRIDGE_TOKEN", "token to call the config service with (default AIBRIDGE_ADMIN_TOKEN)"),
]


def read_config_service_tls(r: Reader) -> tuple[Path | None, Path | None, Path | None]:
    """(CA, client cert, client key) for connecting to the config service; problems to `r`.

    Shared by the CLI, the bridge and the proxy: TLS when the CA is set, mTLS when the
    client certificate and key are set too.
    """
    ca = r.existing_file("AIBRIDGE_CONFIG_SERVICE_CA_FILE")
    cert = r.existing_file("AIBRIDGE_CONFIG_SERVICE_CERT_FILE")
    key = r.existing_file("AIBRIDGE_CONFIG_SERVICE_KEY_FILE")
    if (cert is None) != (key is None):
        r.problems.append(
            "AIBRIDGE_CONFIG_SERVICE_CERT_FILE and AIBRIDGE_CONFIG_SERVICE_KEY_FILE "
            "must be set together"
        )
    if cert is not None and ca is None:
        r.problems.append("a client certificate needs AIBRIDGE_CONFIG_SERVICE_CA_FILE (TLS)")
    return ca, cert, key


CONFIG_SERVICE_PORT = 7443


def read_config_service(r: Reader) -> str:
    """AIBRIDGE_CONFIG_SERVICE as a gRPC target; a host without a port gets 7443.

    gRPC itself would take a bare host to mean port 443, where no config service listens.
    Targets in gRPC's own name syntax (dns:///..., unix:...) are passed through as given.
    """
    target = r.str("AIBRIDGE_CONFIG_SERVICE", f"127.0.0.1:{CONFIG_SERVICE_PORT}")
    bracketed = target.startswith("[") and target.endswith("]")  # [::1]
    return f"{target}:{CONFIG_SERVICE_PORT}" if bracketed or ":" not in target else target


@dataclass(frozen=True)
class ClientSettings:
    target: str = "127.0.0.1:7443"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    token: str = field(default="", repr=False)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], overrides: Mapping[str, str] | None = None
    ) -> ClientSettings:
        r = Reader(environ, overrides)
        target = read_config_service(r)
        ca, cert, key = read_config_service_tls(r)
        token = r.str("AIBRIDGE_TOKEN") or r.str("AIBRIDGE_ADMIN_TOKEN")
        r.check()
        return cls(target, ca, cert, key, token)

    def credentials(self) -> grpc.ChannelCredentials | None:
        if self.ca_file is None:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes(),
            private_key=self.key_file.read_bytes() if self.key_file else None,
            certificate_chain=self.cert_file.read_bytes() if self.cert_file else None,
        )

    def channel(self) -> grpc.Channel:
        credentials = self.credentials()
        if credentials is None:
            return grpc.insecure_channel(self.target)
        return grpc.secure_channel(self.target, credentials)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def client_from_args(args: object, prog: str) -> ClientSettings | None:
    """Client settings from env + flags for an admin command; None after printing why not."""
    import os
    import sys

    from aibridge.envconfig import SettingsError, overrides_from_args

    try:
        client = ClientSettings.from_env(os.environ, overrides_from_args(args, CLIENT_ENV_VARS))
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
    if not client.token:
        print(
            f"{prog}: no token: set AIBRIDGE_TOKEN (or AIBRIDGE_ADMIN_TOKEN) or pass --token",
            file=sys.stderr,
        )
        return None
    return client


_HINTS = {
    grpc.StatusCode.UNAUTHENTICATED: "check AIBRIDGE_TOKEN (or AIBRIDGE_ADMIN_TOKEN)",
    grpc.StatusCode.PERMISSION_DENIED: "this token's role may not do that",
    grpc.StatusCode.UNAVAILABLE: "is the config service running at AIBRIDGE_CONFIG_SERVICE?",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the config service did not answer in time",
}


def describe_rpc_error(exc: grpc.RpcError, target: str) -> str:
    """One clear line for any gRPC error, naming the status and what to check."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    hint = _HINTS.get(code)
    text = f"{code.name.lower().replace('_', ' ')}: {details}"
    if code is grpc.StatusCode.UNAVAILABLE:
        text = f"cannot reach the config service at {target}: {details}"
    return f"{text} ({hint})" if hint else text
