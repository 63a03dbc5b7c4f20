"""Settings of the bridge daemon, from the environment (and flags, which win).

Every bad value is collected and reported at once as one `SettingsError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Self, TypeVar

from aibridge.client import CONNECTION
from aibridge.coder_options import BRIDGE_REFUSED
from aibridge.envconfig import (
    BRIDGE_LISTEN,
    DATA_DIR,
    LOGGING,
    OTEL,
    WORKERS,
    XDG_DATA_HOME,
    Parse,
    Schema,
    Setting,
    boolean,
    duration,
    integer,
    optional,
    path,
    resolve_data_dir,
    text,
)
from aibridge.masking import Secret
from data_plane import daemon
from data_plane.recording.shipper import ShipperSettings
from data_plane.recording.spool import spool_name

T = TypeVar("T")
TOKEN = daemon.daemon_token("bridge")
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
HEADER_TIMEOUT, MAX_HEADER_BYTES, BODY_BUFFER_BYTES, BODY_TIMEOUT = daemon.request_limits(
    (
        "AIBRIDGE_BRIDGE_HEADER_TIMEOUT",
        "AIBRIDGE_BRIDGE_MAX_HEADER_BYTES",
        "AIBRIDGE_BRIDGE_BODY_BUFFER_BYTES",
        "AIBRIDGE_BRIDGE_BODY_TIMEOUT",
    ),
    "a request's headers must arrive within this of connecting or of the previous response",
)
RECORDING = Setting(
    "AIBRIDGE_RECORDING",
    "false: build and ship no interception records at all (visibility off: for measuring "
    "what recording costs; a warning says so at start)",
    boolean,
    "true",
)
RECORDING_QUEUE_SIZE = Setting(
    "AIBRIDGE_RECORDING_QUEUE_SIZE",
    "interception records held in memory for shipping; past it a record is dropped (counted "
    "and logged); from half of it on, records are moved to the spool while the config "
    "service is slow",
    integer(minimum=1),
    "20000",
)
RECORDING_FLUSH_INTERVAL = Setting(
    "AIBRIDGE_RECORDING_FLUSH_INTERVAL",
    "records are shipped (or, with the config service away, spooled) at least this often: "
    "about what a bridge killed with SIGKILL can lose",
    duration,
    "1s",
)
RECORDING_SPOOL = Setting(
    "AIBRIDGE_RECORDING_SPOOL",
    "file (mode 0600) keeping record batches the config service has not stored yet, "
    "replayed in order (default: <data dir>/spool/<node id>.spool)",
    optional(path),
)
RECORDING_SPOOL_MAX_BYTES = Setting(
    "AIBRIDGE_RECORDING_SPOOL_MAX_BYTES",
    "size cap of the spool file; past it records are dropped (counted and logged) "
    "(1073741824: 1 GiB)",
    integer(minimum=64 * 1024),
    str(1024 * 1024 * 1024),
)
RECORDING_TIMEOUT = Setting(
    "AIBRIDGE_RECORDING_TIMEOUT",
    "deadline of one record batch to the config service (then it is spooled), and of "
    "the flush of the queue at shutdown",
    duration,
    "5s",
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
RECORD_PROMPTS = Setting(
    "AIBRIDGE_RECORD_PROMPTS",
    "record each request's last user message and the model's tool-call arguments in its "
    "interception record (readable by owner and auditor tokens only)",
    boolean,
    "false",
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
            daemon.DUMP_DIR,
            RECORD_PROMPTS,
            BREAKER_ENABLED,
            BREAKER_FAILURE_THRESHOLD,
            BREAKER_INTERVAL,
            BREAKER_TIMEOUT,
            BREAKER_MAX_REQUESTS,
            daemon.SNAPSHOT_CACHE,
            daemon.NODE_ID,
            RECORDING,
            RECORDING_QUEUE_SIZE,
            RECORDING_FLUSH_INTERVAL,
            RECORDING_SPOOL,
            RECORDING_SPOOL_MAX_BYTES,
            RECORDING_TIMEOUT,
            DATA_DIR,
            XDG_DATA_HOME,
            WORKERS,
            AWS_REGION,
            AWS_DEFAULT_REGION,
        ),
        BRIDGE_REFUSED,
    )
    + LOGGING
    + OTEL
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
class BridgeSettings(daemon.DaemonSettings):
    bridge_token: Secret
    allow_byok: bool
    limits: ConnectionLimits
    body_buffer_bytes: int
    body_timeout: float
    dump_dir: Path | None
    record_prompts: bool
    breaker: BreakerSettings
    recording_on: bool
    recording: ShipperSettings
    aws_region: str  # Bedrock's fallback region (AWS_REGION, AWS_DEFAULT_REGION)

    def for_worker(self, suffix: str, port: int) -> Self:
        """As one worker runs them: its own node id and its own spool file (two processes
        never append to one spool; the spool of a worker that is gone is adopted)."""
        spool = self.recording.spool_path
        own = replace(
            self.recording, spool_path=spool.with_name(spool.stem + suffix + spool.suffix)
        )
        return replace(super().for_worker(suffix, port), recording=own)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], overrides: Mapping[str, str] | None = None
    ) -> BridgeSettings:
        v, token, follow = daemon.read(SETTINGS, environ, overrides, TOKEN, "bridge")
        v.check()
        host, port = v[BRIDGE_LISTEN]
        spool_file = spool_name(follow["node_id"])
        spool = v[RECORDING_SPOOL] or resolve_data_dir(v) / "spool" / spool_file
        return cls(
            bridge_token=Secret(token),
            **follow,
            listen_host=host,
            listen_port=port,
            allow_byok=v[ALLOW_BYOK],
            limits=ConnectionLimits(v[MAX_CONNECTIONS], v[HEADER_TIMEOUT], v[MAX_HEADER_BYTES]),
            body_buffer_bytes=v[BODY_BUFFER_BYTES],
            body_timeout=v[BODY_TIMEOUT],
            dump_dir=v[daemon.DUMP_DIR],
            record_prompts=v[RECORD_PROMPTS],
            breaker=BreakerSettings(
                v[BREAKER_ENABLED],
                v[BREAKER_FAILURE_THRESHOLD],
                v[BREAKER_INTERVAL],
                v[BREAKER_TIMEOUT],
                v[BREAKER_MAX_REQUESTS],
            ),
            recording_on=v[RECORDING],
            recording=ShipperSettings(
                queue_size=v[RECORDING_QUEUE_SIZE],
                flush_interval=v[RECORDING_FLUSH_INTERVAL],
                spool_path=spool,
                spool_max_bytes=v[RECORDING_SPOOL_MAX_BYTES],
                timeout=v[RECORDING_TIMEOUT],
            ),
            aws_region=v[AWS_REGION] or v[AWS_DEFAULT_REGION],
            **daemon.process_fields(v, "aibridge-bridge"),
        )
