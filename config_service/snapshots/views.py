"""What each scope sees of a provider, and whether the data plane can use it.

`evaluate` decides the status (ENABLED, DISABLED, or ERROR with a reason: a row that
cannot be used is reported, never silently dropped). `render` builds the proto for
one scope: plaintext secrets only in the bridge scope, and only for usable
providers; masked hints in the metadata scope; no key material in the proxy scope.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from aibridge.config.v1 import provider_pb2
from aibridge.masking import mask_secret
from aibridge.rulebook import REGION_RE, TYPES, Bedrock, url_problem
from config_service.rbac import Scope
from config_service.store.records import ProviderRecord

ENABLED = provider_pb2.PROVIDER_STATUS_ENABLED
DISABLED = provider_pb2.PROVIDER_STATUS_DISABLED
ERROR = provider_pb2.PROVIDER_STATUS_ERROR


def uses_bedrock(record: ProviderRecord) -> bool:
    """Served through Bedrock: the one place this is decided (the snapshot carries
    `bedrock` settings exactly for these providers)."""
    capability = TYPES[record.type].bedrock
    return capability is Bedrock.ALWAYS or (
        capability is Bedrock.OPTIONAL
        and record.bedrock is not None
        and record.bedrock.is_configured
    )


def evaluate(record: ProviderRecord, allow_byok: bool) -> tuple[int, str]:
    """(status, reason) of a provider for the data plane."""
    if not record.enabled:
        return DISABLED, ""
    if record.problems:
        return ERROR, "; ".join(record.problems)
    problem = url_problem(record.base_url) if record.base_url else None
    if problem:
        return ERROR, f"base URL {problem}"
    if uses_bedrock(record):
        bedrock = record.bedrock
        if bedrock is None or not bedrock.is_configured:
            return ERROR, "bedrock provider has no region, role or credentials configured"
        if not REGION_RE.match(bedrock.region):
            return ERROR, "bedrock provider needs an AWS region (e.g. us-east-1)"
        if record.base_url == TYPES[record.type].default_base_url:
            return ERROR, (
                "bedrock provider's base URL is its type's non-Bedrock default; "
                "update base_url to '' (the region's Bedrock endpoint)"
            )
        if bool(bedrock.access_key) != bool(bedrock.access_key_secret):
            return ERROR, "bedrock access key and secret must be set together"
        if not bedrock.model or not bedrock.small_fast_model:
            return ERROR, "bedrock model and small/fast model must both be set"
        return ENABLED, ""
    if not record.base_url:
        return ERROR, "no base URL configured"
    if TYPES[record.type].keyless_because:
        return ENABLED, ""
    if not record.keys and not allow_byok:
        return ERROR, "no API keys configured and BYOK is disabled (AIBRIDGE_ALLOW_BYOK=false)"
    return ENABLED, ""


def _ts(value: Any) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def render(record: ProviderRecord, scope: Scope, status: int, reason: str) -> provider_pb2.Provider:
    """The provider as `scope` may see it."""
    with_secrets = scope is Scope.BRIDGE and status == ENABLED
    proto = provider_pb2.Provider(
        id=record.id,
        name=record.name,
        display_name=record.display_name,
        type=TYPES[record.type].wire,
        base_url=record.base_url,
        status=status,  # type: ignore[arg-type]
        status_reason=reason,
        created_at=_ts(record.created_at),
        updated_at=_ts(record.updated_at),
        key_count=len(record.keys),
        etag=record.etag,
    )
    if scope is not Scope.PROXY:
        for key in record.keys:
            proto.keys.add(
                id=key.id,
                hint=key.hint,
                secret=(key.secret or "") if with_secrets else "",
                created_at=_ts(key.created_at),
            )
    bedrock = record.bedrock
    if bedrock is not None and uses_bedrock(record):
        proto.bedrock.region = bedrock.region
        proto.bedrock.model = bedrock.model
        proto.bedrock.small_fast_model = bedrock.small_fast_model
        proto.bedrock.role_arn = bedrock.role_arn
        proto.bedrock.has_static_credentials = bedrock.has_static_credentials
        if with_secrets:
            proto.bedrock.access_key = bedrock.access_key
            proto.bedrock.access_key_secret = bedrock.access_key_secret
        if scope is not Scope.PROXY:
            proto.bedrock.access_key_hint = mask_secret(bedrock.access_key)
    return proto
