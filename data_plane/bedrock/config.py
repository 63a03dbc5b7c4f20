"""Settings of one Bedrock-backed provider, as the bridge hands them to `BedrockClient`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aibridge.masking import Secret

if TYPE_CHECKING:
    from aibridge.config.v1 import provider_pb2

DEFAULT_MODEL = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
DEFAULT_SMALL_FAST_MODEL = "global.anthropic.claude-haiku-4-5-20251001-v1:0"

_REGION_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_HOST_REGION_RE = re.compile(r"^bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com$")


class BedrockConfigError(ValueError):
    """A Bedrock provider's settings cannot be used (the message never holds a secret)."""


@dataclass(frozen=True)
class BedrockConfig:
    """One Bedrock provider: where to send, which models, and how to authenticate.

    Credentials, in order: the static key pair when both halves are set; otherwise boto3's
    default credential chain (env, shared config/SSO, container/instance roles). With
    `role_arn`, those credentials assume the role through STS first, refreshed before expiry.
    """

    region: str
    model: str = DEFAULT_MODEL
    small_fast_model: str = DEFAULT_SMALL_FAST_MODEL
    base_url: str | None = None
    access_key: Secret | None = None
    access_key_secret: Secret | None = None
    role_arn: str | None = None
    external_id: str | None = None
    role_session_name: str = "aibridge-bedrock"

    def __post_init__(self) -> None:
        if not self.region:
            raise BedrockConfigError("bedrock provider has no region")
        if not _REGION_RE.match(self.region):
            raise BedrockConfigError(f"bedrock region {self.region!r} is not an AWS region")
        if bool(self.access_key) != bool(self.access_key_secret):
            raise BedrockConfigError(
                "bedrock access_key and access_key_secret must be set together"
            )
        if not self.model or not self.small_fast_model:
            raise BedrockConfigError("bedrock model and small_fast_model must not be empty")
        if self.base_url is not None and not self.base_url.startswith(("https://", "http://")):
            raise BedrockConfigError(f"bedrock base_url {self.base_url!r} is not an http(s) URL")

    @property
    def endpoint(self) -> str:
        """The Bedrock Runtime base URL, without a trailing slash."""
        base = self.base_url or f"https://bedrock-runtime.{self.region}.amazonaws.com"
        return base.rstrip("/")

    @property
    def has_static_credentials(self) -> bool:
        return bool(self.access_key) and bool(self.access_key_secret)

    @classmethod
    def from_settings(
        cls, base_url: str, settings: provider_pb2.BedrockSettings, default_region: str = ""
    ) -> BedrockConfig:
        """Build from a snapshot's provider `base_url` and `BedrockSettings`.

        Empty strings mean "unset". An empty region falls back to the region named by a
        `bedrock-runtime.<region>.amazonaws.com` base URL, then `default_region` (the
        bridge's AWS_REGION / AWS_DEFAULT_REGION setting); empty models fall back to the
        deployment defaults. A base URL on the Anthropic API host (a legacy anthropic row
        that gained Bedrock settings) is not a Bedrock endpoint and is ignored.
        """
        if _host(base_url) == "api.anthropic.com":
            base_url = ""
        region = settings.region or _region_from_url(base_url) or default_region
        return cls(
            region=region,
            model=settings.model or DEFAULT_MODEL,
            small_fast_model=settings.small_fast_model or DEFAULT_SMALL_FAST_MODEL,
            base_url=base_url or None,
            access_key=Secret(settings.access_key) if settings.access_key else None,
            access_key_secret=(
                Secret(settings.access_key_secret) if settings.access_key_secret else None
            ),
            role_arn=settings.role_arn or None,
        )


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()


def _region_from_url(url: str) -> str | None:
    match = _HOST_REGION_RE.match(_host(url))
    return match.group(1) if match else None
