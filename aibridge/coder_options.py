"""Coder's runtime option names (DESIGN §6 and the Coder reference), per daemon.

A deployment migrating from Coder keeps its `CODER_AI_GATEWAY_*` (or older
`CODER_AIBRIDGE_*`) variables. Each option with an equivalent here is read as an alias
of ours (`aliases`: our variable -> the name after the Coder prefix); ours wins, and
the two set to different values is an error. An option with no equivalent that changes
security (`unsupported`) refuses start-up naming the variable: silently running
without the rate limit, the listener TLS or the upstream proxy it asks for would be
worse than not starting. Values are never echoed (a proxy URL may hold a password).
The provider variables are the seed's (`config_service.seed.env`), not listed here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

CODER_PREFIXES = ("CODER_AI_GATEWAY_", "CODER_AIBRIDGE_")  # current name first


@dataclass(frozen=True)
class CoderOptions:
    aliases: Mapping[str, str] = field(default_factory=dict)
    # name after the prefix -> (the value that means "off", why it cannot be honoured)
    unsupported: Mapping[str, tuple[str, str]] = field(default_factory=dict)


def coder_names(suffix: str) -> tuple[str, ...]:
    return tuple(prefix + suffix for prefix in CODER_PREFIXES)


_BREAKER = {
    f"AIBRIDGE_CIRCUIT_BREAKER_{name}": f"CIRCUIT_BREAKER_{name}"
    for name in ("ENABLED", "FAILURE_THRESHOLD", "INTERVAL", "TIMEOUT", "MAX_REQUESTS")
}

CONFIG_SERVICE = CoderOptions(aliases={"AIBRIDGE_ALLOW_BYOK": "ALLOW_BYOK"})

BRIDGE = CoderOptions(
    aliases={"AIBRIDGE_ALLOW_BYOK": "ALLOW_BYOK", "AIBRIDGE_DUMP_DIR": "DUMP_DIR", **_BREAKER},
    unsupported={
        "RATE_LIMIT": ("0", "the bridge has no per-token request rate limit"),
        "MAX_CONCURRENCY": ("0", "the bridge has no per-replica concurrency limit"),
    },
)

PROXY = CoderOptions(
    aliases={
        "AIBRIDGE_DUMP_DIR": "PROXY_DUMP_DIR",
        "AIBRIDGE_PROXY_LISTEN": "PROXY_LISTEN_ADDR",
        "AIBRIDGE_PROXY_CA_CERT_FILE": "PROXY_CERT_FILE",
        "AIBRIDGE_PROXY_CA_KEY_FILE": "PROXY_KEY_FILE",
        "AIBRIDGE_PROXY_ALLOWED_PRIVATE_CIDRS": "PROXY_ALLOWED_PRIVATE_CIDRS",
    },
    unsupported={
        "PROXY_TLS_CERT_FILE": ("", "the proxy listener has no TLS; put a TLS terminator in front"),
        "PROXY_TLS_KEY_FILE": ("", "the proxy listener has no TLS; put a TLS terminator in front"),
        "PROXY_UPSTREAM": ("", "tunnels cannot go through an upstream proxy, they would go direct"),
        "PROXY_UPSTREAM_CA": ("", "tunnels cannot go through an upstream proxy"),
    },
)
