"""Providers as the bridge builds them, and errors in each provider family's format.

The families themselves (routes, failure statuses, type names) are in the provider
rulebook, `aibridge.rulebook`, shared with the proxy and the config service.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aibridge.rulebook import ROUTES, Family, RouteSet
from data_plane.bridge.breaker import BreakerSet
from data_plane.bridge.keypool import KeyPool
from data_plane.bridge.upstream import AnthropicUpstream


@dataclass(frozen=True, eq=False)
class Provider:
    """One provider as built from a snapshot. Pool and breakers carry live state."""

    name: str
    type: str
    family: Family
    base_url: str
    status: int
    status_reason: str = ""
    keys: tuple[str, ...] = ()
    pool: KeyPool | None = None
    breakers: BreakerSet | None = None
    bedrock: AnthropicUpstream | None = None

    @property
    def routes(self) -> RouteSet:
        return ROUTES[self.family]

    def match(self, path: str) -> bool | None:
        """True: intercepted route; False: passthrough; None: not served."""
        routes = ROUTES[self.family]
        if path in routes.intercepted:
            return True
        if path in routes.passthrough_exact or path.startswith(routes.passthrough_prefixes):
            return False
        return None

    def upstream_url(self, path: str, query: bytes) -> str:
        suffix = path.removeprefix(ROUTES[self.family].strip_prefix)
        url = self.base_url.rstrip("/") + suffix
        return f"{url}?{query.decode('latin-1')}" if query else url


_ERROR_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request_error"),
    401: ("authentication_error", "authentication_error"),
    403: ("permission_error", "permission_error"),
    404: ("not_found_error", "not_found_error"),
    408: ("invalid_request_error", "invalid_request_error"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_error"),
    431: ("invalid_request_error", "invalid_request_error"),
    502: ("api_error", "api_error"),
    503: ("server_error", "overloaded_error"),
    504: ("timeout_error", "api_error"),
}


def error_body(family: Family | None, status: int, message: str, code: str = "") -> bytes:
    """An error in the provider's own format (OpenAI's for unknown providers)."""
    openai_type, anthropic_type = _ERROR_TYPES.get(status, ("api_error", "api_error"))
    if family is Family.ANTHROPIC:
        doc: object = {"type": "error", "error": {"type": anthropic_type, "message": message}}
    else:
        doc = {"error": {"message": message, "type": openai_type, "code": code or None}}
    return json.dumps(doc, separators=(",", ":")).encode()
