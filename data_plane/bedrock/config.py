"""Settings of one Bedrock-backed provider, as the bridge hands them to `BedrockClient`.

Built from the snapshot as it is: the config service validated the region, the key pair
and the models and filled in the defaults (`aibridge.rulebook`), so nothing is re-checked
or re-defaulted here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aibridge.masking import Secret
from aibridge.rulebook import (
    DEFAULT_BEDROCK_MODEL,
    DEFAULT_BEDROCK_SMALL_FAST_MODEL,
    bedrock_base_url,
)

if TYPE_CHECKING:
    from aibridge.config.v1 import provider_pb2


@dataclass(frozen=True)
class BedrockConfig:
    """One Bedrock provider: where to send, which models, and how to authenticate.

    Credentials, in order: the static key pair when both halves are set; otherwise boto3's
    default credential chain (env, shared config/SSO, container/instance roles). With
    `role_arn`, those credentials assume the role through STS first, refreshed before expiry.
    """

    region: str
    model: str = DEFAULT_BEDROCK_MODEL
    small_fast_model: str = DEFAULT_BEDROCK_SMALL_FAST_MODEL
    base_url: str | None = None
    access_key: Secret | None = None
    access_key_secret: Secret | None = None
    role_arn: str | None = None
    external_id: str | None = None
    role_session_name: str = "aibridge-bedrock"

    @property
    def endpoint(self) -> str:
        """The Bedrock Runtime base URL, without a trailing slash."""
        return (self.base_url or bedrock_base_url(self.region)).rstrip("/")

    @property
    def has_static_credentials(self) -> bool:
        return bool(self.access_key) and bool(self.access_key_secret)

    @classmethod
    def from_settings(
        cls, base_url: str, settings: provider_pb2.BedrockSettings, default_region: str = ""
    ) -> BedrockConfig:
        """Build from a snapshot's provider `base_url` and `BedrockSettings` (empty: unset).

        `default_region` (the bridge's AWS_REGION / AWS_DEFAULT_REGION setting) only serves
        a snapshot without a region: the config service always sends one.
        """
        return cls(
            region=settings.region or default_region,
            model=settings.model,
            small_fast_model=settings.small_fast_model,
            base_url=base_url or None,
            access_key=Secret(settings.access_key) if settings.access_key else None,
            access_key_secret=(
                Secret(settings.access_key_secret) if settings.access_key_secret else None
            ),
            role_arn=settings.role_arn or None,
        )
