"""Settings, each declared once, and the one loader that reads them (env + flags).

A `Setting` declares one setting: its environment variable, its flag (derived from
the variable), its default (as text, parsed like any given value), its help, whether
it is a secret (its value is never echoed) and the name after Coder's prefix it is
also read under. A `Schema` is the settings of one command: `Schema.load` reads them
from the environment and the flags (flags win), honours the Coder aliases, and
collects every bad value; `Values.check()` raises one SettingsError listing them all.
docs/configuration.md is generated from the same declarations.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import socket
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast
from urllib.parse import urlsplit

from aibridge.coder_options import coder_names

PREFIX = "AIBRIDGE_"
T = TypeVar("T")
V = TypeVar("V", covariant=True)
Parse = Callable[[str], T]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(Exception):
    """One or more settings are invalid; `problems` lists every one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in self.problems))


def flag_for(env_name: str) -> str:
    """AIBRIDGE_BRIDGE_LISTEN -> --bridge-listen: every AIBRIDGE_ setting is also a flag."""
    return "--" + env_name.removeprefix(PREFIX).lower().replace("_", "-")


@dataclass(frozen=True)
class Setting(Generic[V]):
    """One setting. `parse` turns the text (never empty unless the default is) into
    its value or raises ValueError with what was expected; an unset or empty variable
    takes `default`, which must parse."""

    env: str
    help: str
    parse: Parse[V]
    default: str = ""
    secret: bool = False
    coder: str = ""  # the name after a Coder prefix (coder_options) read as an alias
    flagged: bool = True  # False: another tool's variable (XDG_DATA_HOME), no flag

    @property
    def flag(self) -> str | None:
        return flag_for(self.env) if self.flagged else None


# --- kinds: parsers of one setting's text ------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*\Z")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def text(value: str) -> str:
    return value


def choice(*options: str) -> Parse[str]:
    """One of `options` (case-insensitive); empty means unset where the default is empty."""

    def parse(value: str) -> str:
        if value and value.lower() not in options:
            raise ValueError("expected " + ", ".join(options[:-1]) + f" or {options[-1]}")
        return value.lower()

    return parse


def boolean(value: str) -> bool:
    if value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ValueError("expected true or false")


def integer(minimum: int | None = None) -> Parse[int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError("expected a whole number") from None
        if minimum is not None and number < minimum:
            raise ValueError(f"must be at least {minimum}")
        return number

    return parse


def seconds(value: str) -> float:
    """Seconds, 0 or more, from '30s', '500ms', '2m', '24h', '7d' or a bare number of seconds."""
    match = _DURATION.match(value)
    if not match:
        raise ValueError("expected a duration such as 30s or 500ms")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def duration(value: str) -> float:
    """A `seconds` value more than 0."""
    parsed = seconds(value)
    if parsed <= 0:
        raise ValueError("must be more than 0")
    return parsed


def worker_count(value: str) -> int:
    """A number of worker processes, 1 or more, or `auto`: one per core this process may use."""
    if value.strip().lower() == "auto":
        if hasattr(os, "sched_getaffinity"):
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1
    try:
        number = int(value)
    except ValueError:
        raise ValueError("expected a whole number of processes or auto") from None
    if not 1 <= number <= MAX_WORKERS:
        raise ValueError(f"must be between 1 and {MAX_WORKERS} (or auto)")
    return number


MAX_WORKERS = 256


def address(value: str) -> tuple[str, int]:
    """host:port (IPv6 as [::1]:port); port 0 picks a free port; ':port' means all."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError("expected host:port")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - an explicit ':port'


def path(value: str) -> Path:
    return Path(value).expanduser()


def existing_file(value: str) -> Path:
    found = path(value)
    if not found.is_file():
        raise ValueError("no such file")
    return found


def http_url(value: str) -> str:
    """An absolute http(s) URL, without a trailing slash."""
    url = value.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http(s) URL")
    return url


def port(value: str) -> int:
    if not (value.isdigit() and 0 < int(value) < 65536):
        raise ValueError("not a port number")
    return int(value)


def cidr(value: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError("not a CIDR") from None


def optional(parse: Parse[T]) -> Parse[T | None]:
    """`parse`, or None for an empty value (a setting that is off unless given)."""
    return lambda value: parse(value) if value else None


def items(parse: Parse[T]) -> Parse[tuple[T, ...]]:
    """A comma-separated list of `parse` values; every bad item is named."""

    def parse_all(value: str) -> tuple[T, ...]:
        parts = [part.strip() for part in value.split(",") if part.strip()]
        good: list[T] = []
        bad: list[str] = []
        for part in parts:
            try:
                good.append(parse(part))
            except ValueError as exc:
                bad.append(f"{part!r} is {exc}")
        if bad:
            raise ValueError("; ".join(bad))
        return tuple(good)

    return parse_all


# --- the loader ----------------------------------------------------------------------


class Values:
    """The settings of one schema as read, and every problem found reading them."""

    def __init__(self, values: dict[str, Any], problems: list[str]):
        self._values = values
        self.problems = problems

    def __getitem__(self, setting: Setting[T]) -> T:
        return cast(T, self._values[setting.env])

    def check(self) -> None:
        if self.problems:
            raise SettingsError(self.problems)


@dataclass(frozen=True)
class Schema:
    """The settings of one command, and the Coder options it refuses:
    name after the prefix -> (the value that means "off", why it cannot be honoured)."""

    settings: tuple[Setting[Any], ...]
    coder_refused: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def only(self, *names: str) -> Schema:
        return Schema(tuple(s for s in self.settings if s.env in names))

    def __add__(self, other: Schema) -> Schema:
        return Schema(self.settings + other.settings, {**self.coder_refused, **other.coder_refused})

    def load(
        self, environ: Mapping[str, str], overrides: Mapping[str, str] | None = None
    ) -> Values:
        """Read every setting: flags (`overrides`, {ENV: value}) win over `environ`."""
        env = {name: value.strip() for name, value in {**environ, **(overrides or {})}.items()}
        problems: list[str] = []
        origin: dict[str, str] = {}
        for setting in self.settings:
            if setting.coder:
                _alias(setting, env, origin, problems)
        problems += _refused(self.coder_refused, env)
        values = {}
        for setting in self.settings:
            label = origin.get(setting.env, setting.env)
            values[setting.env] = _read(setting, env.get(setting.env, ""), label, problems)
        return Values(values, problems)

    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        """One flag per setting that has one; its value arrives as the variable's."""
        for setting in self.settings:
            if setting.flag is not None:
                default = f"default {setting.default}; " if setting.default else ""
                parser.add_argument(
                    setting.flag,
                    dest=setting.env,
                    default=None,
                    metavar="VALUE",
                    help=f"{setting.help} ({default}env {setting.env})",
                )

    def given(self, args: argparse.Namespace) -> dict[str, str]:
        """The flags given, as {ENV_NAME: value}: the `overrides` of `load`."""
        found = {s.env: getattr(args, s.env, None) for s in self.settings}
        return {name: str(value) for name, value in found.items() if value is not None}


def _read(setting: Setting[T], value: str, label: str, problems: list[str]) -> T:
    try:
        return setting.parse(value or setting.default)
    except ValueError as exc:
        shown = "" if setting.secret else f"={value!r}"
        problems.append(f"{label}{shown}: {exc}")
        return setting.parse(setting.default)


def _alias(
    setting: Setting[Any], env: dict[str, str], origin: dict[str, str], problems: list[str]
) -> None:
    """Coder's names of `setting` read as its aliases; ours wins, a conflict is refused."""
    given = [name for name in coder_names(setting.coder) if env.get(name)]
    if not given:
        return
    names = ([setting.env] if env.get(setting.env) else []) + given
    if len({env[name] for name in names}) > 1:
        problems.append(f"{' and '.join(names)} are set to different values; keep only {names[0]}")
    elif not env.get(setting.env):
        env[setting.env], origin[setting.env] = env[given[0]], given[0]


def _refused(refused: Mapping[str, tuple[str, str]], env: Mapping[str, str]) -> Iterable[str]:
    """Coder options we cannot honour that change security: set (and not off), refused."""
    for suffix, (off, why) in refused.items():
        for name in coder_names(suffix):
            value = env.get(name, "")
            if value and value.lower() != off:
                yield (
                    f"{name} is set, but AI Bridge has no equivalent ({why}); refusing to "
                    "start rather than ignore it: unset it"
                )


# --- settings several commands share -------------------------------------------------

XDG_DATA_HOME = Setting(
    "XDG_DATA_HOME",
    "base of the per-user data directory on Linux (default ~/.local/share)",
    optional(path),
    flagged=False,
)
DATA_DIR = Setting(
    "AIBRIDGE_DATA_DIR",
    "data directory: the SQLite database, the generated proxy CA, `aibridge up`'s secrets "
    "(default: $XDG_DATA_HOME/aibridge, ~/Library/Application Support/aibridge on macOS)",
    optional(path),
)
LOG_FORMAT = Setting(
    "AIBRIDGE_LOG_FORMAT",
    "json or console (default: json unless a terminal)",
    choice("json", "console"),
)
LOG_LEVEL = Setting(
    "AIBRIDGE_LOG_LEVEL",
    "debug, info, warning or error",
    choice("debug", "info", "warning", "error"),
    "info",
)
GRPC_LISTEN = Setting(
    "AIBRIDGE_GRPC_LISTEN",
    "config service gRPC listen address host:port",
    address,
    "127.0.0.1:7443",
)
BRIDGE_LISTEN = Setting(
    "AIBRIDGE_BRIDGE_LISTEN", "bridge HTTP listen address host:port", address, "127.0.0.1:8080"
)
PROXY_LISTEN = Setting(
    "AIBRIDGE_PROXY_LISTEN", "proxy listen address host:port", address, "127.0.0.1:8888"
)
CONSOLE_LISTEN = Setting(
    "AIBRIDGE_CONSOLE_LISTEN",
    "web console HTTP listen address host:port",
    address,
    "127.0.0.1:7080",
)
CONSOLE_SESSION_TTL = Setting(
    "AIBRIDGE_CONSOLE_SESSION_TTL",
    "how long a console sign-in lasts before the token must be given again",
    duration,
    "8h",
)
CONSOLE_TLS_CERT_FILE = Setting(
    "AIBRIDGE_CONSOLE_TLS_CERT_FILE",
    "PEM certificate to serve the console over HTTPS (session cookies are then Secure)",
    optional(existing_file),
)
CONSOLE_TLS_KEY_FILE = Setting(
    "AIBRIDGE_CONSOLE_TLS_KEY_FILE",
    "PEM private key of AIBRIDGE_CONSOLE_TLS_CERT_FILE",
    optional(existing_file),
)
WORKERS = Setting(
    "AIBRIDGE_WORKERS",
    "worker processes serving the one listen port (SO_REUSEPORT), each under its own name "
    "(the node id, or the config service's replica id, + -w0, -w1, ...); auto: one per core",
    worker_count,
    "1",
)
LOGGING = Schema((LOG_FORMAT, LOG_LEVEL))


def resolve_data_dir(values: Values) -> Path:
    """AIBRIDGE_DATA_DIR, or the per-user data directory (XDG on Linux, ~/Library on macOS)."""
    given = values[DATA_DIR]
    if given is not None:
        return given
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "aibridge"
    return (values[XDG_DATA_HOME] or Path.home() / ".local" / "share") / "aibridge"


def role_token(role: str, help: str) -> Setting[str]:
    """AIBRIDGE_<ROLE>_TOKEN, a secret: the token of the `role` principal."""
    return Setting(f"AIBRIDGE_{role.upper()}_TOKEN", help, text, secret=True)


def process_id() -> str:
    """`<host>-<pid>`: the default name of a replica or node that was given none."""
    return f"{socket.gethostname()}-{os.getpid()}"


# --- OpenTelemetry: the standard OTEL_* variables (aibridge/telemetry.py) ---------------
# Other tools' names (no flags). Off unless an OTLP endpoint is given; the SDK also reads
# the OTEL_* variables not declared here (headers, certificates, timeouts, resource
# attributes, the metric export interval) from the process environment itself.


def otlp_endpoint(value: str) -> str:
    """An OTLP endpoint: an absolute http(s) URL (gRPC too: http:// means plaintext)."""
    try:
        return http_url(value)
    except ValueError:
        raise ValueError("expected an http(s) URL such as http://127.0.0.1:4317") from None


def ratio(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("expected a number from 0 to 1") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError("expected a number from 0 to 1")
    return number


OTLP_PROTOCOLS = ("grpc", "http/protobuf")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
OTEL_SDK_DISABLED = Setting(
    "OTEL_SDK_DISABLED",
    "true: OpenTelemetry off even with an endpoint",
    boolean,
    "false",
    flagged=False,
)
OTEL_ENDPOINT = Setting(
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTLP collector URL: switches OpenTelemetry traces and metrics on (empty: off); "
    "over HTTP /v1/traces and /v1/metrics are appended",
    optional(otlp_endpoint),
    flagged=False,
)
OTEL_TRACES_ENDPOINT = Setting(
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTLP URL for traces alone, used as it is (default: from OTEL_EXPORTER_OTLP_ENDPOINT)",
    optional(otlp_endpoint),
    flagged=False,
)
OTEL_METRICS_ENDPOINT = Setting(
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTLP URL for metrics alone, used as it is (default: from OTEL_EXPORTER_OTLP_ENDPOINT)",
    optional(otlp_endpoint),
    flagged=False,
)
OTEL_PROTOCOL = Setting(
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTLP transport: grpc or http/protobuf",
    choice(*OTLP_PROTOCOLS),
    "http/protobuf",
    flagged=False,
)
OTEL_TRACES_PROTOCOL = Setting(
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTLP transport of traces (default: OTEL_EXPORTER_OTLP_PROTOCOL)",
    choice(*OTLP_PROTOCOLS),
    flagged=False,
)
OTEL_METRICS_PROTOCOL = Setting(
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTLP transport of metrics (default: OTEL_EXPORTER_OTLP_PROTOCOL)",
    choice(*OTLP_PROTOCOLS),
    flagged=False,
)
OTEL_TRACES_EXPORTER = Setting(
    "OTEL_TRACES_EXPORTER",
    "otlp, or none: no traces",
    choice("otlp", "none"),
    "otlp",
    flagged=False,
)
OTEL_METRICS_EXPORTER = Setting(
    "OTEL_METRICS_EXPORTER",
    "otlp, or none: no OTel metrics",
    choice("otlp", "none"),
    "otlp",
    flagged=False,
)
OTEL_SERVICE_NAME = Setting(
    "OTEL_SERVICE_NAME",
    "service.name of this process's telemetry (default aibridge-bridge, aibridge-proxy, "
    "aibridge-config-service)",
    text,
    flagged=False,
)
OTEL_TRACES_SAMPLER = Setting(
    "OTEL_TRACES_SAMPLER",
    "which traces are kept: " + ", ".join(SAMPLERS),
    choice(*SAMPLERS),
    "parentbased_always_on",
    flagged=False,
)
OTEL_TRACES_SAMPLER_ARG = Setting(
    "OTEL_TRACES_SAMPLER_ARG",
    "the ratio of the traceidratio samplers, 0 to 1",
    ratio,
    "1.0",
    flagged=False,
)
OTEL_METRIC_EXPORT_INTERVAL = Setting(
    "OTEL_METRIC_EXPORT_INTERVAL",
    "milliseconds between OTLP metric exports",
    integer(minimum=1),
    "60000",
    flagged=False,
)
OTEL = Schema(
    (
        OTEL_SDK_DISABLED,
        OTEL_ENDPOINT,
        OTEL_TRACES_ENDPOINT,
        OTEL_METRICS_ENDPOINT,
        OTEL_PROTOCOL,
        OTEL_TRACES_PROTOCOL,
        OTEL_METRICS_PROTOCOL,
        OTEL_TRACES_EXPORTER,
        OTEL_METRICS_EXPORTER,
        OTEL_SERVICE_NAME,
        OTEL_TRACES_SAMPLER,
        OTEL_TRACES_SAMPLER_ARG,
        OTEL_METRIC_EXPORT_INTERVAL,
    )
)
