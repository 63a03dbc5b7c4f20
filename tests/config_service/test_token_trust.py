"""Who may hold which token (issue #11, items 6 and 7): daemon tokens are never minted over
the API, the data plane gets member token hashes only, weak bootstrap tokens are refused."""

from __future__ import annotations

import base64
import os

import grpc
import pytest

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import config_service_pb2_grpc as cs_grpc
from aibridge.config.v1 import token_admin_service_pb2 as ta
from aibridge.config.v1 import token_admin_service_pb2_grpc as ta_grpc
from aibridge.config.v1 import token_pb2
from aibridge.envconfig import SettingsError
from aibridge.masking import sha256_hex
from config_service.rbac import Role
from config_service.settings import ConfigServiceSettings
from config_service.store.tokens import (
    MIN_TOKEN_BITS,
    new_token_secret,
    token_strength,
    weak_token_problem,
)
from tests.fixtures.services import Service


@pytest.mark.parametrize(
    ("role", "variable"),
    [
        (token_pb2.ROLE_BRIDGE, "AIBRIDGE_BRIDGE_TOKEN"),
        (token_pb2.ROLE_PROXY, "AIBRIDGE_PROXY_TOKEN"),
    ],
)
async def test_owner_cannot_mint_a_daemon_token(service: Service, role: int, variable: str) -> None:
    """An owner asking CreateToken for a bridge or proxy token gets PERMISSION_DENIED naming the two allowed paths, and no token is made."""
    stub = ta_grpc.TokenAdminServiceStub(service.channel())
    owner = service.md_for(Role.OWNER)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateToken(
            ta.CreateTokenRequest(principal_name="sneaky", role=role), metadata=owner
        )
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    details = str(refused.value.details())
    assert variable in details and "aibridge tokens create --local" in details
    listed = await stub.ListTokens(ta.ListTokensRequest(include_revoked=True), metadata=owner)
    assert "sneaky" not in {t.principal_name for t in listed.tokens}


async def test_data_plane_snapshots_carry_member_token_hashes_only(service: Service) -> None:
    """The bridge and proxy snapshots hold the hashes of member tokens and of no owner (AIBRIDGE_ADMIN_TOKEN included), auditor or daemon token."""
    stub = ta_grpc.TokenAdminServiceStub(service.channel())
    owner = service.md_for(Role.OWNER)
    second_owner = await stub.CreateToken(
        ta.CreateTokenRequest(principal_name="ops", role=token_pb2.ROLE_OWNER), metadata=owner
    )
    forbidden = {sha256_hex(t) for r, t in service.tokens.items() if r is not Role.MEMBER}
    forbidden.add(sha256_hex(second_owner.secret))
    config = cs_grpc.ConfigServiceStub(service.channel())
    for role in (Role.BRIDGE, Role.PROXY):
        answer = await config.GetProviderSnapshot(
            cs.GetProviderSnapshotRequest(), metadata=service.md_for(role)
        )
        hashes = {t.sha256 for t in answer.snapshot.gateway_tokens}
        assert hashes == {sha256_hex(service.tokens[Role.MEMBER])}, role
        assert {t.role for t in answer.snapshot.gateway_tokens} == {token_pb2.ROLE_MEMBER}
        assert not forbidden & hashes


@pytest.mark.parametrize(
    "variable", ["AIBRIDGE_ADMIN_TOKEN", "AIBRIDGE_BRIDGE_TOKEN", "AIBRIDGE_PROXY_TOKEN"]
)
@pytest.mark.parametrize(
    "weak",
    [
        "correcthorse2024",  # the 16 characters a dictionary recovered
        "admin-admin-admin-admin-admin-admin",  # long but few distinct characters
        "x" * 64,
        "Zq3vR8kWp1Lm7tYb2Nc9",  # random, but only 20 characters
        "abcdefghijklmnopqrstuvwxyz012345",  # 32 distinct characters, but a run
        "0123456789abcdefghijklmnopqrstuvwxyz",
        "ab" * 100,  # long, but one pattern repeated
        "Zq3vR8kWp1Lm" * 4,
        # Passphrases: long and varied, but a word list guesses them word by word.
        "correct horse battery staple purple monkey dishwasher",
        "my-super-secret-admin-token-2024-production-cluster",
        "CorrectHorseBatteryStaplePurpleMonkeyDishwasherRainbow",
        "the quick brown fox jumps over the lazy dog",
        "staple battery horse correct staple battery horse correct",
    ],
)
def test_weak_bootstrap_token_is_refused(variable: str, weak: str) -> None:
    """A weak bootstrap token stops start-up with one line naming the variable and how to make one, never showing the value."""
    with pytest.raises(SettingsError) as refused:
        ConfigServiceSettings.from_env({variable: weak})
    message = str(refused.value)
    line = next(line for line in message.splitlines() if variable in line)
    assert "too weak" in line and "openssl rand -base64 32" in line
    assert weak not in message


def test_generated_tokens_are_strong_enough() -> None:
    """Tokens made by the service, `openssl rand -base64 32` and `openssl rand -hex 32` pass."""
    for value in (
        new_token_secret(),
        base64.b64encode(os.urandom(32)).decode(),
        os.urandom(32).hex(),
    ):
        assert weak_token_problem("T", value) is None


def test_a_passphrase_is_refused_as_dictionary_words() -> None:
    """A passphrase of common words is refused, the message naming the dictionary-word estimate and not the phrase."""
    phrase = "correct horse battery staple purple monkey dishwasher"
    problem = weak_token_problem("AIBRIDGE_ADMIN_TOKEN", phrase)
    assert problem is not None and "dictionary words" in problem
    assert not any(word in problem for word in phrase.split())


def test_random_tokens_are_never_taken_for_words() -> None:
    """Thousands of generated tokens of each recipe pass, with a margin over the bits required."""
    recipes = (
        new_token_secret,
        lambda: base64.b64encode(os.urandom(32)).decode(),
        lambda: os.urandom(32).hex(),
    )
    for recipe in recipes:
        weakest = min(token_strength(recipe())[0] for _ in range(3000))
        assert weakest >= MIN_TOKEN_BITS + 8, weakest
