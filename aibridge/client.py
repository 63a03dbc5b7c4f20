"""gRPC client side for the CLI: settings, channel (TLS/mTLS), bearer metadata, errors.

Settings: AIBRIDGE_CONFIG_SERVICE (host:port), AIBRIDGE_CONFIG_SERVICE_CA_FILE (TLS),
AIBRIDGE_CONFIG_SERVICE_CERT_FILE / _KEY_FILE (client certificate for mTLS), and the
token: AIBRIDGE_TOKEN, falling back to AIBRIDGE_ADMIN_TOKEN.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from aibridge.envconfig import Schema, Setting, Values, existing_file, optional, text
from aibridge.terminal import escape

CONFIG_SERVICE_PORT = 7443


def config_service_target(value: str) -> str:
    """AIBRIDGE_CONFIG_SERVICE as a gRPC target; a host without a port gets 7443.

    gRPC itself would take a bare host to mean port 443, where no config service listens.
    Targets in gRPC's own name syntax (dns:///..., unix:...) are passed through as given.
    """
    bracketed = value.startswith("[") and value.endswith("]")  # [::1]
    return f"{value}:{CONFIG_SERVICE_PORT}" if bracketed or ":" not in value else value


CONFIG_SERVICE = Setting(
    "AIBRIDGE_CONFIG_SERVICE",
    f"config service host[:port] (port {CONFIG_SERVICE_PORT} if omitted)",
    config_service_target,
    f"127.0.0.1:{CONFIG_SERVICE_PORT}",
)
CONFIG_SERVICE_CA_FILE = Setting(
    "AIBRIDGE_CONFIG_SERVICE_CA_FILE",
    "PEM CA bundle to verify the config service (enables TLS)",
    optional(existing_file),
)
CONFIG_SERVICE_CERT_FILE = Setting(
    "AIBRIDGE_CONFIG_SERVICE_CERT_FILE",
    "PEM client certificate for mTLS to the config service",
    optional(existing_file),
)
CONFIG_SERVICE_KEY_FILE = Setting(
    "AIBRIDGE_CONFIG_SERVICE_KEY_FILE",
    "PEM client key for mTLS to the config service",
    optional(existing_file),
)
# How the CLI, the bridge and the proxy reach the config service.
CONNECTION = Schema(
    (CONFIG_SERVICE, CONFIG_SERVICE_CA_FILE, CONFIG_SERVICE_CERT_FILE, CONFIG_SERVICE_KEY_FILE)
)
TOKEN = Setting(
    "AIBRIDGE_TOKEN",
    "token to call the config service with (default AIBRIDGE_ADMIN_TOKEN)",
    text,
    secret=True,
)
ADMIN_TOKEN_FALLBACK = Setting(
    "AIBRIDGE_ADMIN_TOKEN",
    "the token when AIBRIDGE_TOKEN is unset",
    text,
    secret=True,
    flagged=False,
)
CLIENT = CONNECTION + Schema((TOKEN, ADMIN_TOKEN_FALLBACK))


def config_service_tls(v: Values) -> tuple[Path | None, Path | None, Path | None]:
    """(CA, client cert, client key) for connecting to the config service; problems to `v`.

    TLS when the CA is set, mTLS when the client certificate and key are set too.
    """
    ca, cert, key = (
        v[CONFIG_SERVICE_CA_FILE],
        v[CONFIG_SERVICE_CERT_FILE],
        v[CONFIG_SERVICE_KEY_FILE],
    )
    if (cert is None) != (key is None):
        v.problems.append(
            "AIBRIDGE_CONFIG_SERVICE_CERT_FILE and AIBRIDGE_CONFIG_SERVICE_KEY_FILE "
            "must be set together"
        )
    if cert is not None and ca is None:
        v.problems.append("a client certificate needs AIBRIDGE_CONFIG_SERVICE_CA_FILE (TLS)")
    return ca, cert, key


@dataclass(frozen=True)
class ClientSettings:
    target: str
    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None
    token: str = field(repr=False)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], overrides: Mapping[str, str] | None = None
    ) -> ClientSettings:
        v = CLIENT.load(environ, overrides)
        settings = cls.of(v, v[TOKEN] or v[ADMIN_TOKEN_FALLBACK])
        v.check()
        return settings

    @classmethod
    def of(cls, v: Values, token: str) -> ClientSettings:
        """The config service's address and TLS files from `v` (their problems added to
        `v.problems`: check `v` before using the result), with `token`."""
        return cls(v[CONFIG_SERVICE], *config_service_tls(v), token)

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


class UsageError(Exception):
    """Bad command-line input: exit 2."""


def run_admin(
    prog: str, args: argparse.Namespace, action: Callable[[ClientSettings, grpc.Channel], int]
) -> int:
    """An admin command's `action` on a channel to the config service; its exit code, or
    2 for bad input (settings, `UsageError`) and 1 for a failed RPC, explained on stderr."""
    import sys

    client = client_from_args(args, prog)
    if client is None:
        return 2
    try:
        with client.channel() as channel:
            return action(client, channel)
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        print(f"{prog}: {describe_rpc_error(exc, client.target)}", file=sys.stderr)
        return 1


def admin_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """An admin command's parser, its module docstring shown as written."""
    return argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def admin_flags(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`--json` and the connection flags every admin (sub)command takes."""
    p.add_argument("--json", action="store_true", help="machine-readable output")
    CLIENT.add_flags(p)
    return p


def client_from_args(args: argparse.Namespace, prog: str) -> ClientSettings | None:
    """Client settings from env + flags for an admin command; None after printing why not."""
    import os
    import sys

    from aibridge.envconfig import SettingsError

    try:
        client = ClientSettings.from_env(os.environ, CLIENT.given(args))
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
    details = escape(exc.details() if isinstance(exc, grpc.Call) else exc)
    hint = _HINTS.get(code)
    text = f"{code.name.lower().replace('_', ' ')}: {details}"
    if code is grpc.StatusCode.UNAVAILABLE:
        text = f"cannot reach the config service at {target}: {details}"
    return f"{text} ({hint})" if hint else text
