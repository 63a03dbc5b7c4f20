"""Credential sources: static keys stay masked, the default chain, assumed roles via fake STS."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import botocore.session
import httpx
import pytest
from bedrock_testkit import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    FakeBedrock,
    json_ok,
    message_json,
    static_config,
)
from botocore.credentials import Credentials
from botocore.stub import Stubber

from aibridge.masking import Secret
from data_plane.bedrock import (
    AwsCredentials,
    BedrockClient,
    BedrockConfig,
    CredentialResolver,
)
from data_plane.errors import BedrockCredentialsError

ROLE_ARN = "arn:aws:iam::123456789012:role/bedrock-invoker"
ROLE_KEYS = [
    ("ASIAROLEACCESSKEY001", "role-secret-number-one/0000000000000000", "role-token-1"),
    ("ASIAROLEACCESSKEY002", "role-secret-number-two/0000000000000000", "role-token-2"),
]
REQUEST: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": []}


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def fake() -> FakeBedrock:
    fake = FakeBedrock()
    for ak, sk, token in ROLE_KEYS:
        fake.known[ak] = (sk, token)
    fake.respond = lambda got: json_ok(message_json())
    return fake


@pytest.fixture
async def http(fake: FakeBedrock) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=fake.transport()) as client:
        yield client


def stubbed_sts() -> tuple[Any, Stubber]:
    client = botocore.session.Session().create_client(
        "sts", region_name=REGION, aws_access_key_id="x" * 16, aws_secret_access_key="y" * 16
    )
    return client, Stubber(client)


def assume_role_response(index: int, expires: dt.datetime) -> dict[str, Any]:
    ak, sk, token = ROLE_KEYS[index]
    return {
        "Credentials": {
            "AccessKeyId": ak,
            "SecretAccessKey": sk,
            "SessionToken": token,
            "Expiration": expires,
        },
        "AssumedRoleUser": {
            "AssumedRoleId": "AROAEXAMPLE:aibridge-bedrock",
            "Arn": f"{ROLE_ARN}/aibridge-bedrock",
        },
    }


async def test_static_secrets_never_in_repr_or_str(http: httpx.AsyncClient) -> None:
    """Static keys are masked in every repr/str a log line or traceback could show."""
    cfg = static_config()
    creds = AwsCredentials(Secret(ACCESS_KEY), Secret(SECRET_KEY), Secret("session-token-xyz"))
    shown = [repr(cfg), str(cfg), repr(creds), str(creds), repr(CredentialResolver(cfg))]
    shown.append(repr(BedrockClient(cfg, http)))
    for text in shown:
        assert SECRET_KEY not in text
        assert ACCESS_KEY not in text
        assert "session-token-xyz" not in text


async def test_static_credentials_sign_requests(fake: FakeBedrock, http: httpx.AsyncClient) -> None:
    """Static keys sign the request with no session token."""
    result = await BedrockClient(static_config(), http).invoke(REQUEST, {})
    assert result.status == 200
    assert fake.received[0].access_key == ACCESS_KEY
    assert "x-amz-security-token" not in fake.received[0].headers


async def test_assume_role_with_static_source_and_refresh(
    fake: FakeBedrock, http: httpx.AsyncClient
) -> None:
    """With role_arn, static keys assume the role via STS; creds refresh before they expire."""
    clock = Clock()
    sts, stubber = stubbed_sts()
    expected = {"RoleArn": ROLE_ARN, "RoleSessionName": "aibridge-bedrock", "ExternalId": "ext-1"}
    stubber.add_response(
        "assume_role", assume_role_response(0, clock.now + dt.timedelta(hours=1)), expected
    )
    stubber.add_response(
        "assume_role", assume_role_response(1, clock.now + dt.timedelta(hours=2)), expected
    )
    sources: list[AwsCredentials | None] = []

    def factory(source: AwsCredentials | None, region: str) -> Any:
        sources.append(source)
        assert region == REGION
        return sts

    cfg = static_config(role_arn=ROLE_ARN, external_id="ext-1")
    resolver = CredentialResolver(cfg, sts_client_factory=factory, time_fetcher=clock)
    client = BedrockClient(cfg, http, credentials=resolver)
    with stubber:
        assert resolver.source == "assume-role(static)"
        for _ in range(3):
            assert (await client.invoke(REQUEST, {})).status == 200
        clock.now += dt.timedelta(minutes=40)  # 20 min left: still inside the fresh window
        assert (await client.invoke(REQUEST, {})).status == 200
        clock.now += dt.timedelta(minutes=8)  # 12 min left: advisory refresh window
        assert (await client.invoke(REQUEST, {})).status == 200
        assert (await client.invoke(REQUEST, {})).status == 200
        stubber.assert_no_pending_responses()
    assert [r.access_key for r in fake.received] == [ROLE_KEYS[0][0]] * 4 + [ROLE_KEYS[1][0]] * 2
    assert [r.headers["x-amz-security-token"] for r in fake.received][-1] == "role-token-2"
    assert fake.rejected == []
    assert len(sources) == 1
    assert sources[0] == AwsCredentials(Secret(ACCESS_KEY), Secret(SECRET_KEY))


async def test_assume_role_failure_is_a_502_without_secrets(
    fake: FakeBedrock, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused AssumeRole becomes an Anthropic api_error 502 that names no secret."""
    sts, stubber = stubbed_sts()
    stubber.add_client_error(
        "assume_role", "AccessDenied", "not authorized to perform sts:AssumeRole", 403
    )
    cfg = static_config(role_arn=ROLE_ARN)
    resolver = CredentialResolver(cfg, sts_client_factory=lambda source, region: sts)
    caplog.set_level(logging.DEBUG)
    with stubber:
        stream = await BedrockClient(cfg, http, credentials=resolver).stream(REQUEST, {})
    body = b"".join([chunk async for chunk in stream])
    assert stream.status == 502
    error = json.loads(body)["error"]
    assert error["type"] == "api_error"
    assert "AccessDenied" in error["message"]
    for text in (body.decode(), caplog.text, repr(stream.error)):
        assert SECRET_KEY not in text
        assert ACCESS_KEY not in text
    assert fake.received == []


async def test_default_chain_is_lazy_cached_and_negative_cached(
    fake: FakeBedrock, http: httpx.AsyncClient
) -> None:
    """Without static keys the default chain is asked once; a miss is a 502 and is cached."""
    calls: list[int] = []

    def chain() -> Any:
        calls.append(1)
        return Credentials(ACCESS_KEY, SECRET_KEY) if len(calls) > 1 else None

    cfg = BedrockConfig(region=REGION)
    resolver = CredentialResolver(cfg, chain_loader=chain)
    client = BedrockClient(cfg, http, credentials=resolver)
    assert calls == []
    first = await client.invoke(REQUEST, {})
    assert first.status == 502
    assert b"no AWS credentials found" in first.body
    assert (await client.invoke(REQUEST, {})).status == 502
    assert len(calls) == 1  # the miss is remembered for a few seconds
    resolver._failed_at = None  # the negative cache expired
    assert (await client.invoke(REQUEST, {})).status == 200
    assert (await client.invoke(REQUEST, {})).status == 200
    assert len(calls) == 2
    assert resolver.source == "default-chain"


async def test_refreshable_chain_credentials_refresh_off_loop() -> None:
    """Refreshable chain credentials (e.g. an instance role) are refreshed near expiry."""
    clock = Clock()
    fetched: list[int] = []

    def refresh() -> dict[str, str]:
        fetched.append(1)
        n = len(fetched)
        return {
            "access_key": f"ASIACHAIN{n:011d}",
            "secret_key": f"chain-secret-{n}",
            "token": f"chain-token-{n}",
            "expiry_time": (clock.now + dt.timedelta(hours=1)).isoformat(),
        }

    from botocore.credentials import DeferredRefreshableCredentials

    chain_creds = DeferredRefreshableCredentials(refresh, "iam-role", time_fetcher=clock)
    resolver = CredentialResolver(BedrockConfig(region=REGION), chain_loader=lambda: chain_creds)
    first = await resolver.get()
    assert first.secret_key == Secret("chain-secret-1")
    assert (await resolver.get()) == first
    clock.now += dt.timedelta(minutes=55)
    second = await resolver.get()
    assert second.token == Secret("chain-token-2")
    assert len(fetched) == 2


async def test_credentials_error_type() -> None:
    """A chain that raises surfaces as BedrockCredentialsError naming only the failure kind."""

    def broken() -> Any:
        raise RuntimeError("metadata service unreachable")

    resolver = CredentialResolver(BedrockConfig(region=REGION), chain_loader=broken)
    with pytest.raises(BedrockCredentialsError, match="RuntimeError: metadata service"):
        await resolver.get()
