"""Provider types: their wire enum, default base URLs and what each may hold."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from aibridge.config.v1 import provider_pb2

# \Z, not $: in Python `$` also matches before a trailing newline ("openai\n").
NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*\Z")
MAX_NAME_LENGTH = 63
MAX_KEYS = 5

# Bedrock: region names as the data plane checks them, IAM role ARNs, and the standard
# runtime host a region can be read from.
REGION_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*\Z", re.ASCII)
ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/\S+\Z", re.ASCII)
BEDROCK_HOST_RE = re.compile(r"^bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com$")
DEFAULT_BEDROCK_MODEL = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
DEFAULT_BEDROCK_SMALL_FAST_MODEL = "global.anthropic.claude-haiku-4-5-20251001-v1:0"

TO_PROTO: dict[str, provider_pb2.ProviderType.ValueType] = {
    "openai": provider_pb2.PROVIDER_TYPE_OPENAI,
    "anthropic": provider_pb2.PROVIDER_TYPE_ANTHROPIC,
    "bedrock": provider_pb2.PROVIDER_TYPE_BEDROCK,
    "azure": provider_pb2.PROVIDER_TYPE_AZURE,
    "google": provider_pb2.PROVIDER_TYPE_GOOGLE,
    "openai-compat": provider_pb2.PROVIDER_TYPE_OPENAI_COMPAT,
    "openrouter": provider_pb2.PROVIDER_TYPE_OPENROUTER,
    "vercel": provider_pb2.PROVIDER_TYPE_VERCEL,
    "copilot": provider_pb2.PROVIDER_TYPE_COPILOT,
}
FROM_PROTO = {v: k for k, v in TO_PROTO.items()}
PROVIDER_TYPES = tuple(TO_PROTO)

# Types that hold Bedrock settings; types that never hold pool keys.
BEDROCK_CAPABLE = frozenset({"anthropic", "bedrock"})
KEYLESS = frozenset({"bedrock", "copilot"})

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1/",
    "anthropic": "https://api.anthropic.com/",
    "copilot": "https://api.individual.githubcopilot.com",
}


def bedrock_base_url(region: str) -> str:
    return f"https://bedrock-runtime.{region}.amazonaws.com"


def default_base_url(provider_type: str, bedrock_region: str = "") -> str:
    if provider_type == "bedrock" and bedrock_region:
        return bedrock_base_url(bedrock_region)
    return DEFAULT_BASE_URLS.get(provider_type, "")


def base_url_problem(url: str) -> str | None:
    """Why a base URL is unusable, or None: it must be an absolute http(s) URL with a host."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http(s) URL, e.g. https://api.example.com/v1/"
    if url != url.strip() or any(c.isspace() for c in url):
        return "must not contain whitespace"
    return None


def name_problem(name: str) -> str | None:
    if not NAME_RE.match(name):
        return f"{name!r} must match ^[a-z0-9]+(-[a-z0-9]+)*$ (lower-case letters, digits, dashes)"
    if len(name) > MAX_NAME_LENGTH:
        return f"must be at most {MAX_NAME_LENGTH} characters"
    return None
