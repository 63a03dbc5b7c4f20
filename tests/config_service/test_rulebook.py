"""One rulebook: the env seed and the admin API refuse the same specs, the same way."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest

from aibridge.config.v1 import provider_admin_service_pb2 as pb
from aibridge.config.v1 import provider_pb2
from aibridge.rulebook import BedrockSpec, ProviderSpec, validate
from config_service.rbac import Role
from config_service.seed.env import SeedConfigError
from tests.config_service.test_provider_admin import rpc_error, stub
from tests.fixtures.services import StartService

P = "AIBRIDGE_PROVIDER_0_"
KEY = "sk-rulebook-AAAA1111bbbb2222"

# (env fields after P, CreateProviderRequest fields, the variable, field and message expected)
INVALID_SPECS = [
    pytest.param(
        {"NAME": "a" * 70},
        {"name": "a" * 70},
        "NAME",
        "name",
        "must be at most 63 characters",
        id="70-character-name",
    ),
    pytest.param(
        {"NAME": "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"},
        {"name": "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"},
        "NAME",
        "name",
        "must not look like a UUID (ids and names share id_or_name)",
        id="uuid-shaped-name",
    ),
    pytest.param(
        {"NAME": "big-url", "BASE_URL": "https://api.example.com/" + "a" * 3000},
        {"name": "big-url", "base_url": "https://api.example.com/" + "a" * 3000},
        "BASE_URL",
        "base_url",
        "must be at most 2048 characters",
        id="3kb-base-url",
    ),
    pytest.param(
        {"NAME": "bell", "KEYS": "sk-rulebook-\x07-bell"},
        {"name": "bell", "keys": ["sk-rulebook-\x07-bell"]},
        "KEYS",
        "keys[0]",
        "must be printable (no control characters or line breaks)",
        id="control-character-in-key",
    ),
]


@pytest.mark.parametrize(("env", "request_fields", "variable", "field", "message"), INVALID_SPECS)
async def test_env_seed_and_admin_api_refuse_the_same_spec_alike(
    start_service: StartService,
    env: dict[str, str],
    request_fields: dict[str, Any],
    variable: str,
    field: str,
    message: str,
) -> None:
    """An invalid spec is refused by the env seed and by CreateProvider with one field and message."""
    with pytest.raises(SeedConfigError) as seed_error:
        await start_service(**{f"{P}TYPE": "openai", **{P + k: v for k, v in env.items()}})
    assert seed_error.value.problems == [f"{P}{variable}: {field} {message}"]
    service = await start_service()  # the same database: the seed inserted nothing
    request = pb.CreateProviderRequest(type=provider_pb2.PROVIDER_TYPE_OPENAI, **request_fields)
    err = await rpc_error(
        stub(service).CreateProvider(request, metadata=service.md_for(Role.OWNER))
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == f"{field}: {message}"
    for value in env.values():  # neither side quotes what it refuses (it may be a secret)
        assert value not in str(seed_error.value) and value not in err.details()
    listed = await stub(service).ListProviders(
        pb.ListProvidersRequest(), metadata=service.md_for(Role.OWNER)
    )
    assert list(listed.providers) == []


def test_the_validator_returns_every_problem_at_once() -> None:
    """One call names every problem of a spec, each with its field, in field order."""
    spec = ProviderSpec(
        name=str(uuid.uuid4()),
        type="openai",
        display_name="tab\there",
        base_url="ftp://example.com/",
        keys=(KEY, "", KEY),
        bedrock=BedrockSpec(region="us-east-1"),
    )
    assert [f for f, _ in validate(spec)] == [
        "name",
        "display_name",
        "bedrock",
        "base_url",
        "keys[1]",
        "keys[2]",
    ]
    assert KEY not in repr(validate(spec)) and KEY not in repr(spec)
