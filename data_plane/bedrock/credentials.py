"""AWS credentials for Bedrock: static keys, boto3's default chain, or an assumed role.

Resolution is lazy (first request) and cached. Every blocking botocore call (the default
chain may hit the instance metadata service; STS is a network call) runs in a worker thread;
a request whose cached credentials are fresh never leaves the event loop. Assumed-role
credentials are botocore `RefreshableCredentials`: refreshed in the background window 15 min
before expiry and mandatorily 10 min before it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import botocore.credentials
import botocore.session

from aibridge.masking import Secret
from data_plane.bedrock.config import BedrockConfig
from data_plane.errors import BedrockCredentialsError

# (static source credentials or None for the default chain, region) -> a botocore STS client.
StsClientFactory = Callable[["AwsCredentials | None", str], Any]
# () -> botocore credentials from the default chain, or None when the chain finds nothing.
ChainLoader = Callable[[], Any]
TimeFetcher = Callable[[], dt.datetime]

_NEGATIVE_CACHE_SECONDS = 10.0


@dataclass(frozen=True)
class AwsCredentials:
    """One consistent set of AWS credentials; every part masked in repr/str."""

    access_key: Secret
    secret_key: Secret
    token: Secret | None = None

    def to_botocore(self) -> Any:
        return botocore.credentials.Credentials(
            self.access_key.value,
            self.secret_key.value,
            self.token.value if self.token else None,
        )


def _default_chain() -> Any:
    return botocore.session.Session().get_credentials()


def _default_sts_client(static: AwsCredentials | None, region: str) -> Any:
    session = botocore.session.Session()
    if static is None:
        return session.create_client("sts", region_name=region)
    return session.create_client(
        "sts",
        region_name=region,
        aws_access_key_id=static.access_key.value,
        aws_secret_access_key=static.secret_key.value,
        aws_session_token=static.token.value if static.token else None,
    )


def _local_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CredentialResolver:
    """Resolves (and caches) the credentials a `BedrockConfig` calls for."""

    def __init__(
        self,
        config: BedrockConfig,
        *,
        chain_loader: ChainLoader = _default_chain,
        sts_client_factory: StsClientFactory = _default_sts_client,
        time_fetcher: TimeFetcher = _local_now,
    ) -> None:
        self._config = config
        self._chain_loader = chain_loader
        self._sts_client_factory = sts_client_factory
        self._time_fetcher = time_fetcher
        self._creds: Any = None  # botocore Credentials / RefreshableCredentials
        self._failed_at: float | None = None
        self._failure = ""
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"CredentialResolver(region={self._config.region!r}, source={self.source!r})"

    @property
    def source(self) -> str:
        """Where credentials come from: static, default-chain, or assume-role(+...)."""
        base = "static" if self._config.has_static_credentials else "default-chain"
        return f"assume-role({base})" if self._config.role_arn else base

    async def get(self) -> AwsCredentials:
        """Current credentials; raises `BedrockCredentialsError` when none can be had."""
        creds = self._creds
        if creds is not None and not _refresh_needed(creds):
            return _convert(creds.get_frozen_credentials())
        async with self._lock:
            if self._creds is None:
                if self._failed_at is not None and (
                    time.monotonic() - self._failed_at < _NEGATIVE_CACHE_SECONDS
                ):
                    raise BedrockCredentialsError(self._failure)
                try:
                    self._creds = await asyncio.to_thread(self._build)
                except BedrockCredentialsError as exc:
                    self._failed_at, self._failure = time.monotonic(), str(exc)
                    raise
            return _convert(await asyncio.to_thread(self._frozen, self._creds))

    def _frozen(self, creds: Any) -> Any:
        try:
            return creds.get_frozen_credentials()
        except Exception as exc:
            raise BedrockCredentialsError(
                f"refreshing {self.source} credentials failed: {type(exc).__name__}: {exc}"
            ) from None

    def _build(self) -> Any:
        cfg = self._config
        static: AwsCredentials | None = None
        if cfg.access_key and cfg.access_key_secret:
            static = AwsCredentials(cfg.access_key, cfg.access_key_secret)
        if cfg.role_arn:
            return self._assume_role(static, cfg.role_arn)
        if static is not None:
            return static.to_botocore()
        try:
            creds = self._chain_loader()
        except Exception as exc:
            raise BedrockCredentialsError(
                f"AWS default credential chain failed: {type(exc).__name__}: {exc}"
            ) from None
        if creds is None:
            raise BedrockCredentialsError("no AWS credentials found in the default chain")
        return creds

    def _assume_role(self, static: AwsCredentials | None, role_arn: str) -> Any:
        cfg = self._config
        client = self._sts_client_factory(static, cfg.region)
        params = {"RoleArn": role_arn, "RoleSessionName": cfg.role_session_name}
        if cfg.external_id:
            params["ExternalId"] = cfg.external_id

        def fetch() -> dict[str, str]:
            resp = client.assume_role(**params)
            c = resp["Credentials"]
            expiry = c["Expiration"]
            return {
                "access_key": c["AccessKeyId"],
                "secret_key": c["SecretAccessKey"],
                "token": c["SessionToken"],
                "expiry_time": expiry.isoformat() if isinstance(expiry, dt.datetime) else expiry,
            }

        return botocore.credentials.DeferredRefreshableCredentials(
            refresh_using=fetch, method="assume-role", time_fetcher=self._time_fetcher
        )


def _refresh_needed(creds: Any) -> bool:
    if isinstance(creds, botocore.credentials.RefreshableCredentials):
        return bool(creds.refresh_needed())
    return False


def _convert(frozen: Any) -> AwsCredentials:
    return AwsCredentials(
        Secret(frozen.access_key),
        Secret(frozen.secret_key),
        Secret(frozen.token) if frozen.token else None,
    )
