"""The provider rulebook: what each provider type is, and what a provider may hold.

One table, many readers. The admin API (`config_service.store`) and the env seed
(`config_service.seed`) validate a `ProviderSpec` with `validate`, which returns every
problem at once as (field, message) pairs; `complete` fills in the defaults of a valid
spec. The snapshot views decide each provider's status from these rules; both daemons
read the families' routes and failure statuses from `TYPES` and trust the snapshot for
the rest. Below both planes: this module imports only the generated API package.

Messages never quote a value that could be a secret or carry one (keys, URLs).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from urllib.parse import urlsplit

from aibridge.config.v1 import provider_pb2

PT = provider_pb2.ProviderType

NAME_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"  # as messages show it
# \Z, not $: in Python `$` also matches before a trailing newline ("openai\n").
NAME_RE = re.compile(NAME_PATTERN.removesuffix("$") + r"\Z", re.ASCII)
MAX_NAME_LENGTH = 63
MAX_KEYS = 5
MAX_DISPLAY_NAME = 200
MAX_BASE_URL = 2048
MAX_SECRET = 4096
MAX_SETTING = 256
UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)

# Bedrock: AWS region names, IAM role ARNs, and the standard runtime host a region is read from.
REGION_RE = NAME_RE  # region names have the same shape (us-east-1)
ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/\S+\Z", re.ASCII)
BEDROCK_HOST_RE = re.compile(r"^bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com$")
DEFAULT_BEDROCK_MODEL = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
DEFAULT_BEDROCK_SMALL_FAST_MODEL = "global.anthropic.claude-haiku-4-5-20251001-v1:0"


# ---------------------------------------------------------------------------- the type table


class Family(Enum):
    """The API a provider type speaks (every type but Anthropic, Bedrock, Copilot: OpenAI's)."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    COPILOT = "copilot"


@dataclass(frozen=True)
class RouteSet:
    """A family's routes, relative to `/<provider>`."""

    intercepted: frozenset[str]
    passthrough_exact: frozenset[str]
    passthrough_prefixes: tuple[str, ...]
    strip_prefix: str  # dropped from the path before joining with the base URL (ends in /v1)
    failure_statuses: frozenset[int]  # upstream statuses the circuit breaker counts


ROUTES: dict[Family, RouteSet] = {
    Family.OPENAI: RouteSet(
        intercepted=frozenset({"/v1/chat/completions", "/v1/responses"}),
        passthrough_exact=frozenset({"/v1/models", "/v1/conversations"}),
        passthrough_prefixes=("/v1/models/", "/v1/conversations/", "/v1/responses/"),
        strip_prefix="/v1",
        failure_statuses=frozenset({503, 504}),
    ),
    Family.ANTHROPIC: RouteSet(
        intercepted=frozenset({"/v1/messages"}),
        passthrough_exact=frozenset({"/v1/models", "/v1/messages/count_tokens"}),
        passthrough_prefixes=("/v1/models/", "/api/event_logging/"),
        strip_prefix="",
        failure_statuses=frozenset({503, 504, 529}),
    ),
    Family.COPILOT: RouteSet(
        intercepted=frozenset({"/chat/completions", "/responses"}),
        passthrough_exact=frozenset({"/models"}),
        passthrough_prefixes=("/models/", "/agents/", "/mcp/", "/.well-known/"),
        strip_prefix="",
        failure_statuses=frozenset({503, 504}),
    ),
}


class Bedrock(Enum):
    """Whether a type is served through Amazon Bedrock."""

    NEVER = "never"
    OPTIONAL = "optional"  # when Bedrock settings are given
    ALWAYS = "always"


@dataclass(frozen=True)
class ProviderType:
    name: str
    wire: provider_pb2.ProviderType.ValueType
    family: Family
    default_base_url: str = ""  # empty: a base URL must be given
    keyless_because: str = ""  # why it never holds pool keys; empty: up to MAX_KEYS keys
    bedrock: Bedrock = Bedrock.NEVER

    @property
    def routes(self) -> RouteSet:
        return ROUTES[self.family]


TYPES: dict[str, ProviderType] = {
    t.name: t
    for t in (
        ProviderType(
            "openai", PT.PROVIDER_TYPE_OPENAI, Family.OPENAI, "https://api.openai.com/v1/"
        ),
        ProviderType(
            "anthropic",
            PT.PROVIDER_TYPE_ANTHROPIC,
            Family.ANTHROPIC,
            "https://api.anthropic.com/",
            bedrock=Bedrock.OPTIONAL,
        ),
        ProviderType(
            "bedrock",
            PT.PROVIDER_TYPE_BEDROCK,
            Family.ANTHROPIC,
            keyless_because="AWS credentials",
            bedrock=Bedrock.ALWAYS,
        ),
        ProviderType("azure", PT.PROVIDER_TYPE_AZURE, Family.OPENAI),
        ProviderType("google", PT.PROVIDER_TYPE_GOOGLE, Family.OPENAI),
        ProviderType("openai-compat", PT.PROVIDER_TYPE_OPENAI_COMPAT, Family.OPENAI),
        ProviderType("openrouter", PT.PROVIDER_TYPE_OPENROUTER, Family.OPENAI),
        ProviderType("vercel", PT.PROVIDER_TYPE_VERCEL, Family.OPENAI),
        ProviderType(
            "copilot",
            PT.PROVIDER_TYPE_COPILOT,
            Family.COPILOT,
            "https://api.individual.githubcopilot.com",
            keyless_because="each user's own token",
        ),
    )
}
TYPE_NAMES = tuple(TYPES)
BY_WIRE: dict[int, ProviderType] = {t.wire: t for t in TYPES.values()}


def type_name(wire: int) -> str:
    """The type's name for a wire enum value (the number itself when it is unknown)."""
    known = BY_WIRE.get(wire)
    return known.name if known is not None else str(wire)


def bedrock_base_url(region: str) -> str:
    return f"https://bedrock-runtime.{region}.amazonaws.com"


def region_from_url(url: str) -> str:
    """The region of a standard bedrock-runtime.<region>.amazonaws.com URL, else ""."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    match = BEDROCK_HOST_RE.match(host)
    return match.group(1) if match else ""


# ---------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class BedrockSpec:
    """Bedrock settings as written (empty strings mean unset)."""

    region: str = ""
    model: str = ""
    small_fast_model: str = ""
    role_arn: str = ""
    access_key: str = field(default="", repr=False)
    access_key_secret: str = field(default="", repr=False)

    def is_empty(self) -> bool:
        return not any(getattr(self, f) for f in BEDROCK_FIELDS)

    @property
    def has_static_credentials(self) -> bool:
        return bool(self.access_key or self.access_key_secret)

    @property
    def is_configured(self) -> bool:
        """Region, role or credentials set; model names alone never make a provider Bedrock."""
        return bool(self.region or self.role_arn or self.has_static_credentials)


BEDROCK_FIELDS = tuple(f.name for f in fields(BedrockSpec))
BEDROCK_SECRETS = frozenset({"access_key", "access_key_secret"})


@dataclass(frozen=True)
class ProviderSpec:
    """A provider as an admin or the environment describes it."""

    name: str
    type: str
    display_name: str = ""
    base_url: str = ""  # empty: the type's default
    enabled: bool = True
    keys: tuple[str, ...] = field(default=(), repr=False)
    bedrock: BedrockSpec | None = None


Problem = tuple[str, str]  # (field, message), e.g. ("keys[2]", "is empty")


def validate(spec: ProviderSpec) -> list[Problem]:
    """Every problem of `spec`, in field order; empty when it can be stored."""
    problems = [*name_problems(spec.name), *type_problems(spec.type)]
    problems += display_name_problems(spec.display_name)
    bedrock = _given(spec.bedrock)
    ptype = TYPES.get(spec.type)
    if ptype is not None:
        problems += bedrock_problems(ptype, bedrock, spec.base_url)
        problems += base_url_problems(ptype, spec.base_url, bedrock)
        problems += key_count_problems(ptype, bedrock_backed(ptype, bedrock), len(spec.keys))
    for i, secret in enumerate(spec.keys):
        problems += secret_problems(f"keys[{i}]", secret)
    problems += duplicate_problems([(f"keys[{i}]", s) for i, s in enumerate(spec.keys)], {})
    return problems


def complete(spec: ProviderSpec) -> ProviderSpec:
    """A valid spec with its defaults filled in: base URL, Bedrock region and models."""
    ptype = TYPES[spec.type]
    bedrock = _given(spec.bedrock)
    if not bedrock_backed(ptype, bedrock):
        return replace(spec, base_url=spec.base_url or ptype.default_base_url, bedrock=None)
    b = bedrock or BedrockSpec()
    b = replace(
        b,
        region=b.region or region_from_url(spec.base_url),
        model=b.model or DEFAULT_BEDROCK_MODEL,
        small_fast_model=b.small_fast_model or DEFAULT_BEDROCK_SMALL_FAST_MODEL,
    )
    return replace(spec, base_url=spec.base_url or bedrock_base_url(b.region), bedrock=b)


def _given(bedrock: BedrockSpec | None) -> BedrockSpec | None:
    return None if bedrock is None or bedrock.is_empty() else bedrock


def bedrock_backed(ptype: ProviderType, bedrock: BedrockSpec | None) -> bool:
    """Served through Bedrock: a Bedrock type, or a capable one given Bedrock settings."""
    return ptype.bedrock is Bedrock.ALWAYS or (
        ptype.bedrock is Bedrock.OPTIONAL and _given(bedrock) is not None
    )


# ---------------------------------------------------------------------------- one rule each


def name_problems(name: str) -> Iterator[Problem]:
    if not name:
        yield "name", "is required"
    elif len(name) > MAX_NAME_LENGTH:
        yield "name", f"must be at most {MAX_NAME_LENGTH} characters"
    elif not NAME_RE.match(name):
        yield "name", f"must match {NAME_PATTERN} (lower-case letters, digits, single dashes)"
    elif UUID_RE.match(name):
        yield "name", "must not look like a UUID (ids and names share id_or_name)"


def type_problems(ptype: str) -> Iterator[Problem]:
    if not ptype:
        yield "type", f"is required: one of {', '.join(TYPE_NAMES)}"
    elif ptype not in TYPES:
        yield "type", f"must be one of {', '.join(TYPE_NAMES)}"


def text_problems(field_name: str, value: str, max_length: int) -> Iterator[Problem]:
    """A single-line field from outside: bounded, and printable (no control, format or
    line-break characters; NUL never passes, PostgreSQL cannot store it)."""
    if len(value) > max_length:
        yield field_name, f"must be at most {max_length} characters"
    elif not value.isprintable():
        yield field_name, "must be printable (no control characters or line breaks)"


def display_name_problems(value: str) -> Iterator[Problem]:
    yield from text_problems("display_name", value, MAX_DISPLAY_NAME)


def secret_problems(field_name: str, secret: str) -> Iterator[Problem]:
    """A pool key or access key: non-empty, no surrounding whitespace, printable."""
    if not secret:
        yield field_name, "is empty"
    elif secret != secret.strip():
        yield field_name, "must not have leading or trailing whitespace"
    else:
        yield from text_problems(field_name, secret, MAX_SECRET)


def setting_problems(field_name: str, value: str) -> Iterator[Problem]:
    problems = list(text_problems(field_name, value, MAX_SETTING))
    if not problems and value != value.strip():
        problems.append((field_name, "must not be padded with whitespace"))
    yield from problems


def url_problem(url: str) -> str | None:
    """Why a base URL is unusable, or None: an absolute http(s) URL with a host."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed or out-of-range port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http(s) URL, e.g. https://api.example.com/v1/"
    if any(c.isspace() for c in url):
        return "must not contain whitespace"
    if not url.isprintable():
        return "must contain printable characters only"
    return None


def base_url_problems(
    ptype: ProviderType, base_url: str, bedrock: BedrockSpec | None
) -> Iterator[Problem]:
    if base_url:
        problems = list(text_problems("base_url", base_url, MAX_BASE_URL))
        problem = None if problems else url_problem(base_url)
        yield from problems if problem is None else [("base_url", problem)]
    elif not ptype.default_base_url and not bedrock_backed(ptype, bedrock):
        yield "base_url", f"is required for type {ptype.name} (it has no default)"


def bedrock_problems(
    ptype: ProviderType, bedrock: BedrockSpec | None, base_url: str
) -> Iterator[Problem]:
    if bedrock is not None and ptype.bedrock is Bedrock.NEVER:
        yield (
            "bedrock",
            "Bedrock settings are only supported for types "
            f"{' and '.join(t.name for t in TYPES.values() if t.bedrock is not Bedrock.NEVER)}, "
            f"not {ptype.name}",
        )
        return
    if not bedrock_backed(ptype, bedrock):
        return
    b = bedrock or BedrockSpec()
    for name in BEDROCK_FIELDS:
        value = getattr(b, name)
        if name in BEDROCK_SECRETS:
            if value:
                yield from secret_problems(f"bedrock.{name}", value)
        else:
            yield from setting_problems(f"bedrock.{name}", value)
    region = b.region or region_from_url(base_url)
    if not region:
        yield (
            "bedrock.region",
            "is required for a Bedrock provider (requests are signed for a region); a base_url "
            "implies it only with a standard bedrock-runtime.<region>.amazonaws.com host",
        )
    elif not REGION_RE.match(region):
        yield "bedrock.region", "is not an AWS region (e.g. us-east-1)"
    if b.role_arn and not ROLE_ARN_RE.match(b.role_arn):
        yield (
            "bedrock.role_arn",
            "must be an IAM role ARN such as arn:aws:iam::123456789012:role/bedrock",
        )
    if b.access_key and not b.access_key_secret:
        yield "bedrock.access_key_secret", "is required with bedrock.access_key"
    if b.access_key_secret and not b.access_key:
        yield "bedrock.access_key", "is required with bedrock.access_key_secret"


def key_count_problems(ptype: ProviderType, backed: bool, count: int) -> Iterator[Problem]:
    """`count` pool keys on a provider of `ptype` (`backed`: served through Bedrock)."""
    if count and ptype.keyless_because:
        yield (
            "keys",
            f"type {ptype.name} takes no API keys (it authenticates with {ptype.keyless_because})",
        )
    elif count and backed:
        yield (
            "keys",
            "a Bedrock-backed provider takes no API keys (it authenticates with AWS credentials)",
        )
    else:
        yield from too_many_keys(count)


def too_many_keys(count: int) -> Iterator[Problem]:
    if count > MAX_KEYS:
        yield "keys", f"at most {MAX_KEYS} keys per provider, got {count}"


def duplicate_problems(secrets: list[tuple[str, str]], known: dict[str, str]) -> Iterator[Problem]:
    """(field, secret) pairs must differ from each other and from `known` {secret: field}."""
    seen = dict(known)
    for field_name, secret in secrets:
        other = seen.get(secret)
        if other is not None:
            yield field_name, f"duplicate key (same as {other})"
        elif secret:
            seen[secret] = field_name
