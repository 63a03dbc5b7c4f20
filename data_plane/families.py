"""Provider families: which provider type speaks which API, and that API's routes.

Shared by both daemons: the bridge serves these routes (`data_plane.bridge.providers`),
the proxy uses the default base URLs and prefixes to map intercepted hosts onto the
bridge. Every provider type other than Anthropic, Bedrock and Copilot speaks the OpenAI
API. Routes are relative to `/<provider>`; OpenAI-style routes live under `/v1` and that
prefix is dropped when joining with the base URL (which already ends in /v1).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from aibridge.config.v1 import provider_pb2

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
