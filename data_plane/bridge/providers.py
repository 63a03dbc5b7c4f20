"""Provider families: which routes each serves, where they go, how errors look.

Every provider type other than Anthropic, Bedrock and Copilot speaks the OpenAI API.
Routes are relative to `/<provider>`; OpenAI-style routes live under `/v1` and that
prefix is dropped when joining with the base URL (which already ends in /v1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum

from aibridge.config.v1 import provider_pb2
from data_plane.bridge.breaker import BreakerSet
from data_plane.bridge.keypool import KeyPool
from data_plane.bridge.upstream import AnthropicUpstream

PT = provider_pb2.ProviderType


class Family(Enum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    COPILOT = "copilot"


@dataclass(frozen=True)
class RouteSet:
    intercepted: frozenset[str]
    passthrough_exact: frozenset[str]
    passthrough_prefixes: tuple[str, ...]
    strip_prefix: str  # dropped from the path before joining with the base URL
    default_base_url: str
    failure_statuses: frozenset[int]


ROUTES: dict[Family, RouteSet] = {
    Family.OPENAI: RouteSet(
        intercepted=frozenset({"/v1/chat/completions", "/v1/responses"}),
        passthrough_exact=frozenset({"/v1/models", "/v1/conversations"}),
        passthrough_prefixes=("/v1/models/", "/v1/conversations/", "/v1/responses/"),
        strip_prefix="/v1",
        default_base_url="https://api.openai.com/v1/",
        failure_statuses=frozenset({503, 504}),
    ),
    Family.ANTHROPIC: RouteSet(
        intercepted=frozenset({"/v1/messages"}),
        passthrough_exact=frozenset({"/v1/models", "/v1/messages/count_tokens"}),
        passthrough_prefixes=("/v1/models/", "/api/event_logging/"),
        strip_prefix="",
        default_base_url="https://api.anthropic.com/",
        failure_statuses=frozenset({503, 504, 529}),
    ),
    Family.COPILOT: RouteSet(
        intercepted=frozenset({"/chat/completions", "/responses"}),
        passthrough_exact=frozenset({"/models"}),
        passthrough_prefixes=("/models/", "/agents/", "/mcp/", "/.well-known/"),
        strip_prefix="",
        default_base_url="https://api.individual.githubcopilot.com",
        failure_statuses=frozenset({503, 504}),
    ),
}

FAMILY_OF_TYPE: dict[int, Family] = {
    PT.PROVIDER_TYPE_OPENAI: Family.OPENAI,
    PT.PROVIDER_TYPE_AZURE: Family.OPENAI,
    PT.PROVIDER_TYPE_GOOGLE: Family.OPENAI,
    PT.PROVIDER_TYPE_OPENAI_COMPAT: Family.OPENAI,
    PT.PROVIDER_TYPE_OPENROUTER: Family.OPENAI,
    PT.PROVIDER_TYPE_VERCEL: Family.OPENAI,
    PT.PROVIDER_TYPE_ANTHROPIC: Family.ANTHROPIC,
    PT.PROVIDER_TYPE_BEDROCK: Family.ANTHROPIC,
    PT.PROVIDER_TYPE_COPILOT: Family.COPILOT,
}


def type_name(value: int) -> str:
    try:
        return PT.Name(value).removeprefix("PROVIDER_TYPE_").lower().replace("_", "-")  # type: ignore[arg-type]
    except ValueError:
        return str(value)


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
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_error"),
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
