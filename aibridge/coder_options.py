"""Coder's runtime option names (DESIGN §6 and the Coder reference).

A deployment migrating from Coder keeps its `CODER_AI_GATEWAY_*` (or older
`CODER_AIBRIDGE_*`) variables. Each setting with an equivalent names it in its own
declaration (`Setting.coder`, the name after the prefix) and reads it as an alias;
ours wins, and the two set to different values is an error. An option with no
equivalent that changes security (`*_REFUSED` here) refuses start-up naming the
variable: silently running without the rate limit, the listener TLS or the upstream
proxy it asks for would be worse than not starting. Values are never echoed (a proxy
URL may hold a password). The provider variables are the seed's
(`config_service.seed.env`), not listed here.
"""

from __future__ import annotations

CODER_PREFIXES = ("CODER_AI_GATEWAY_", "CODER_AIBRIDGE_")  # current name first


def coder_names(suffix: str) -> tuple[str, ...]:
    return tuple(prefix + suffix for prefix in CODER_PREFIXES)


_NO_PROXY_TLS = ("", "the proxy listener has no TLS; put a TLS terminator in front")

# name after the prefix -> (the value that means "off", why it cannot be honoured)
BRIDGE_REFUSED = {
    "RATE_LIMIT": ("0", "the bridge has no per-token request rate limit"),
    "MAX_CONCURRENCY": ("0", "the bridge has no per-replica concurrency limit"),
}
PROXY_REFUSED = {
    "PROXY_TLS_CERT_FILE": _NO_PROXY_TLS,
    "PROXY_TLS_KEY_FILE": _NO_PROXY_TLS,
    "PROXY_UPSTREAM": ("", "tunnels cannot go through an upstream proxy, they would go direct"),
    "PROXY_UPSTREAM_CA": ("", "tunnels cannot go through an upstream proxy"),
}
