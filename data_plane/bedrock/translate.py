"""Anthropic Messages ⇄ Bedrock: model ids, request bodies, errors, SSE framing.

Model mapping (`bedrock_model_id`), in order:
1. empty / missing model → `config.model`;
2. a model that already names a Bedrock model (contains ':', is an ARN, or starts with a
   Bedrock provider or cross-region inference prefix such as `anthropic.`, `global.`, `us.`,
   `eu.`, `apac.`) → used unchanged;
3. a model whose name contains "haiku" → `config.small_fast_model` (Claude Code sends its
   small/fast background requests with Anthropic haiku model names);
4. anything else (e.g. `claude-sonnet-4-5`) → `config.model`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

from data_plane.bedrock.config import BedrockConfig

ANTHROPIC_VERSION: Final = "bedrock-2023-05-31"

_BEDROCK_PREFIXES: Final = (
    "anthropic.",
    "global.",
    "us.",
    "us-gov.",
    "eu.",
    "apac.",
    "jp.",
    "au.",
    "ca.",
    "arn:",
)

# Lower-cased AWS error name (without the "exception" suffix) → (Anthropic error type, status).
_ERRORS: Final[dict[str, tuple[str, int]]] = {
    "throttling": ("rate_limit_error", 429),
    "toomanyrequests": ("rate_limit_error", 429),
    "servicequotaexceeded": ("rate_limit_error", 429),
    "validation": ("invalid_request_error", 400),
    "serialization": ("invalid_request_error", 400),
    "accessdenied": ("permission_error", 403),
    "unrecognizedclient": ("authentication_error", 401),
    "invalidsignature": ("authentication_error", 401),
    "incompletesignature": ("authentication_error", 401),
    "missingauthenticationtoken": ("authentication_error", 401),
    "expiredtoken": ("authentication_error", 401),
    "resourcenotfound": ("not_found_error", 404),
    "modelnotready": ("overloaded_error", 529),
    "serviceunavailable": ("overloaded_error", 503),
    "modeltimeout": ("timeout_error", 504),
    "internalserver": ("api_error", 500),
    "modelstreamerror": ("api_error", 500),
    "modelerror": ("api_error", 500),
}
# Fallback by HTTP status when the AWS error name is unknown or missing.
_STATUS_TYPES: Final[dict[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def looks_like_bedrock_id(model: str) -> bool:
    return ":" in model or model.startswith(_BEDROCK_PREFIXES)


def bedrock_model_id(model: object, config: BedrockConfig) -> str:
    """The Bedrock model id for a request's Anthropic `model` (see module docstring)."""
    if not isinstance(model, str) or not model.strip():
        return config.model
    model = model.strip()
    if looks_like_bedrock_id(model):
        return model
    if "haiku" in model.lower():
        return config.small_fast_model
    return config.model


def beta_flags(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[str]:
    """Every `anthropic-beta` flag of a request's headers (comma-separated, any number of)."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    flags: list[str] = []
    for name, value in items:
        if name.lower() == "anthropic-beta":
            flags.extend(f.strip() for f in value.split(",") if f.strip())
    return flags


def bedrock_body(body: Mapping[str, Any], betas: list[str]) -> dict[str, Any]:
    """The InvokeModel body for an Anthropic Messages body (the input is not modified).

    `model` and `stream` go (they are in the URL), `anthropic_version` is added unless the
    client sent one, and `anthropic-beta` header flags join any `anthropic_beta` body field.
    Everything else is passed through untouched.
    """
    out = {k: v for k, v in body.items() if k not in ("model", "stream")}
    out.setdefault("anthropic_version", ANTHROPIC_VERSION)
    if betas:
        existing = out.get("anthropic_beta")
        merged = list(existing) if isinstance(existing, list) else []
        merged.extend(b for b in betas if b not in merged)
        out["anthropic_beta"] = merged
    return out


def map_error(aws_type: str | None, status: int) -> tuple[str, int]:
    """(Anthropic error type, HTTP status) for an AWS error name and the upstream status."""
    if aws_type:
        name = aws_type.split(":", 1)[0].rsplit("#", 1)[-1].strip().lower()
        name = name.removesuffix("exception")
        if name in _ERRORS:
            return _ERRORS[name]
    if status < 400:
        status = 500
    return _STATUS_TYPES.get(status, "api_error"), status


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def error_message(payload: bytes, default: str) -> str:
    """The `message` of an AWS error JSON body, or `default`."""
    try:
        parsed = json.loads(payload)
    except ValueError:
        return default
    if isinstance(parsed, dict):
        for key in ("message", "Message"):
            if isinstance(parsed.get(key), str) and parsed[key]:
                return str(parsed[key])
    return default


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def sse_event(event_type: str, data: bytes) -> bytes:
    """One SSE event as the Anthropic API frames it."""
    return b"event: " + event_type.encode() + b"\ndata: " + data + b"\n\n"
