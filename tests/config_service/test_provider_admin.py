"""ProviderAdminService: validation, conflicts, soft delete, key sets, propagation, audit, RBAC."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import select
from structlog.testing import capture_logs

from aibridge import rulebook
from aibridge.config.v1 import config_service_pb2 as cpb
from aibridge.config.v1 import config_service_pb2_grpc as cpb_grpc
from aibridge.config.v1 import provider_admin_service_pb2 as pb
from aibridge.config.v1 import provider_admin_service_pb2_grpc as pb_grpc
from aibridge.config.v1 import provider_pb2
from config_service.db.models import AuditEntry, Provider, ProviderKey
from config_service.errors import AlreadyExists
from config_service.rbac import SYSTEM, Role
from config_service.store import providers
from tests.fixtures.services import Service, StartService

OPENAI = provider_pb2.PROVIDER_TYPE_OPENAI
ANTHROPIC = provider_pb2.PROVIDER_TYPE_ANTHROPIC
BEDROCK = provider_pb2.PROVIDER_TYPE_BEDROCK
AZURE = provider_pb2.PROVIDER_TYPE_AZURE
COPILOT = provider_pb2.PROVIDER_TYPE_COPILOT

K1 = "sk-test-FIRST-5f2c9a81d3e4b6a70c1d"
K2 = "sk-test-SECOND-a93b7e12c4d5f6081e2f"
K3 = "sk-test-THIRD-0e4d8c27b1a9f3655d3a"
K4 = "sk-test-FOURTH-7c1e5a93d2b8f4066e4b"
K5 = "sk-test-FIFTH-b2d6f0a8c4e1937a5f5c"
K6 = "sk-test-SIXTH-d8a1c5e9f3b7026b4a6d"
AWS_KEY = "AKIATESTEXAMPLE7Q3XZ"
AWS_SECRET = "aws-SECRET-9f8e7d6c5b4a39281706fedcba"
SECRETS = (K1, K2, K3, K4, K5, K6, AWS_KEY, AWS_SECRET)


def stub(service: Service) -> pb_grpc.ProviderAdminServiceStub:
    return pb_grpc.ProviderAdminServiceStub(service.channel())


def owner(service: Service) -> tuple[tuple[str, str], ...]:
    return service.md_for(Role.OWNER)


def with_aws_keys(region: str, **extra: str) -> pb.BedrockSettingsInput:
    """Bedrock settings in `region` with the test's AWS access key pair."""
    return pb.BedrockSettingsInput(
        region=region, access_key=AWS_KEY, access_key_secret=AWS_SECRET, **extra
    )


def mask(*paths: str) -> FieldMask:
    return FieldMask(paths=list(paths))


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


def assert_no_secret(text: str | bytes) -> None:
    raw = text.encode() if isinstance(text, str) else text
    for secret in SECRETS:
        assert secret.encode() not in raw, "a plaintext secret leaked"


async def create(service: Service, **fields: Any) -> provider_pb2.Provider:
    fields.setdefault("type", OPENAI)
    response = await stub(service).CreateProvider(
        pb.CreateProviderRequest(**fields), metadata=owner(service)
    )
    assert isinstance(response, pb.CreateProviderResponse)
    return response.provider


async def update(
    service: Service, id_or_name: str, paths: list[str], **fields: Any
) -> provider_pb2.Provider:
    response = await stub(service).UpdateProvider(
        pb.UpdateProviderRequest(id_or_name=id_or_name, update_mask=mask(*paths), **fields),
        metadata=owner(service),
    )
    assert isinstance(response, pb.UpdateProviderResponse)
    return response.provider


async def snapshot(service: Service, role: Role = Role.BRIDGE) -> cpb.ProviderSnapshot:
    response = await cpb_grpc.ConfigServiceStub(service.channel()).GetProviderSnapshot(
        cpb.GetProviderSnapshotRequest(), metadata=service.md_for(role)
    )
    assert isinstance(response, cpb.GetProviderSnapshotResponse)
    return response.snapshot


def audit_rows(service: Service) -> list[AuditEntry]:
    with service.running.db.read() as session:
        return list(session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars())


def provider_rows(service: Service) -> list[Provider]:
    with service.running.db.read() as session:
        return list(session.execute(select(Provider)).scalars())


def key_rows(service: Service, provider_id: str) -> list[ProviderKey]:
    with service.running.db.read() as session:
        return list(
            session.execute(
                select(ProviderKey).where(ProviderKey.provider_id == provider_id)
            ).scalars()
        )


# ----------------------------------------------------------------------------- create / read


async def test_create_fills_defaults_and_masks_keys(service: Service) -> None:
    """Create answers the provider with the type's default base URL, ENABLED, and masked keys only."""
    created = await create(service, name="openai", keys=[K1, K2])
    assert created.id and created.name == "openai"
    assert created.display_name == "openai"
    assert created.base_url == "https://api.openai.com/v1/"
    assert created.status == provider_pb2.PROVIDER_STATUS_ENABLED
    assert created.key_count == 2
    assert [k.hint for k in created.keys] == ["sk-t...0c1d", "sk-t...1e2f"]
    assert all(k.id and not k.secret for k in created.keys)
    assert_no_secret(created.SerializeToString())


async def test_create_keeps_key_order_as_pool_order(service: Service) -> None:
    """The keys of a create become the pool in list order, as the bridge snapshot shows."""
    created = await create(service, name="pool", keys=[K3, K1, K2])
    snap = await snapshot(service)
    (provider,) = [p for p in snap.providers if p.name == "pool"]
    assert [k.secret for k in provider.keys] == [K3, K1, K2]
    assert [k.id for k in provider.keys] == [k.id for k in created.keys]


async def test_get_by_id_and_by_name(service: Service) -> None:
    """GetProvider finds a provider by its UUID (any case) and by its name."""
    created = await create(service, name="lookup", keys=[K1])
    api = stub(service)
    by_name = await api.GetProvider(
        pb.GetProviderRequest(id_or_name="lookup"), metadata=owner(service)
    )
    by_id = await api.GetProvider(
        pb.GetProviderRequest(id_or_name=created.id), metadata=owner(service)
    )
    upper = await api.GetProvider(
        pb.GetProviderRequest(id_or_name=created.id.upper()), metadata=owner(service)
    )
    assert by_name.provider == by_id.provider == upper.provider == created


async def test_list_includes_disabled_sorted_by_name(service: Service) -> None:
    """ListProviders returns every live provider sorted by name, disabled ones with status DISABLED."""
    await create(service, name="zeta", keys=[K1])
    await create(service, name="alpha", keys=[K2], disabled=True)
    listed = await stub(service).ListProviders(pb.ListProvidersRequest(), metadata=owner(service))
    assert [p.name for p in listed.providers] == ["alpha", "zeta"]
    assert listed.providers[0].status == provider_pb2.PROVIDER_STATUS_DISABLED
    assert listed.providers[1].status == provider_pb2.PROVIDER_STATUS_ENABLED


async def test_bedrock_defaults_and_write_only_credentials(service: Service) -> None:
    """A Bedrock provider gets default models and a regional base URL; its credentials are never echoed."""
    created = await create(service, name="aws", type=BEDROCK, bedrock=with_aws_keys("eu-west-1"))
    assert created.base_url == "https://bedrock-runtime.eu-west-1.amazonaws.com"
    assert created.bedrock.model == "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
    assert created.bedrock.small_fast_model == "global.anthropic.claude-haiku-4-5-20251001-v1:0"
    assert created.bedrock.has_static_credentials
    assert created.bedrock.access_key_hint == "AKIA...Q3XZ"
    assert not created.bedrock.access_key and not created.bedrock.access_key_secret
    assert created.status == provider_pb2.PROVIDER_STATUS_ENABLED
    assert_no_secret(created.SerializeToString())


async def test_bedrock_region_implied_by_standard_base_url(service: Service) -> None:
    """A Bedrock provider without a region takes it from a bedrock-runtime.<region> base URL."""
    created = await create(
        service,
        name="aws-url",
        type=BEDROCK,
        base_url="https://bedrock-runtime.us-west-2.amazonaws.com",
        bedrock=pb.BedrockSettingsInput(model="m1"),
    )
    assert created.bedrock.region == "us-west-2"
    assert created.bedrock.model == "m1"


async def test_anthropic_with_bedrock_settings_is_served_through_bedrock(service: Service) -> None:
    """An anthropic provider with Bedrock settings gets the regional Bedrock URL and no keys."""
    created = await create(
        service,
        name="claude-aws",
        type=ANTHROPIC,
        bedrock=pb.BedrockSettingsInput(region="us-east-1"),
    )
    assert created.base_url == "https://bedrock-runtime.us-east-1.amazonaws.com"
    assert created.bedrock.region == "us-east-1"


async def test_created_disabled(service: Service) -> None:
    """A provider created with disabled=true is reported DISABLED."""
    created = await create(service, name="off", keys=[K1], disabled=True)
    assert created.status == provider_pb2.PROVIDER_STATUS_DISABLED


# ----------------------------------------------------------------------------- validation

LONG = "a" * 64
CREATE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("empty-name", {"name": ""}, "name"),
    ("upper-case-name", {"name": "OpenAI"}, "name"),
    ("double-dash-name", {"name": "a--b"}, "name"),
    ("trailing-dash-name", {"name": "ab-"}, "name"),
    ("name-too-long", {"name": LONG}, "name"),
    ("uuid-shaped-name", {"name": str(uuid.uuid4())}, "name"),
    ("type-unspecified", {"type": provider_pb2.PROVIDER_TYPE_UNSPECIFIED}, "type"),
    ("type-unknown", {"type": 99}, "type"),
    ("base-url-ftp", {"base_url": "ftp://example.com/"}, "base_url"),
    ("base-url-relative", {"base_url": "/v1"}, "base_url"),
    ("base-url-garbage", {"base_url": "not a url"}, "base_url"),
    ("base-url-control-char", {"base_url": "https://a.example/\x00"}, "base_url"),
    ("base-url-required-for-azure", {"type": AZURE}, "base_url"),
    ("six-keys", {"keys": [K1, K2, K3, K4, K5, K6]}, "keys"),
    ("empty-key", {"keys": [K1, ""]}, "keys[1]"),
    ("padded-key", {"keys": [" " + K1]}, "keys[0]"),
    ("trailing-newline-key", {"keys": [K1 + "\n"]}, "keys[0]"),
    ("control-char-key", {"keys": ["sk-\x01" + K1]}, "keys[0]"),
    ("duplicate-key", {"keys": [K1, K2, K1]}, "keys[2]"),
    ("keys-for-copilot", {"type": COPILOT, "keys": [K1]}, "keys"),
    (
        "keys-for-bedrock",
        {"type": BEDROCK, "keys": [K1], "bedrock": pb.BedrockSettingsInput(region="us-east-1")},
        "keys",
    ),
    (
        "keys-with-bedrock-backed-anthropic",
        {"type": ANTHROPIC, "keys": [K1], "bedrock": pb.BedrockSettingsInput(region="us-east-1")},
        "keys",
    ),
    (
        "bedrock-settings-on-openai",
        {"bedrock": pb.BedrockSettingsInput(region="us-east-1")},
        "bedrock",
    ),
    ("bedrock-without-region", {"type": BEDROCK}, "bedrock.region"),
    (
        "bedrock-custom-url-without-region",
        {"type": BEDROCK, "base_url": "https://vpce.example.com"},
        "bedrock.region",
    ),
    (
        "bedrock-bad-region",
        {"type": BEDROCK, "bedrock": pb.BedrockSettingsInput(region="US East")},
        "bedrock.region",
    ),
    (
        "bedrock-access-key-alone",
        {
            "type": BEDROCK,
            "bedrock": pb.BedrockSettingsInput(region="us-east-1", access_key=AWS_KEY),
        },
        "bedrock.access_key_secret",
    ),
    (
        "bedrock-secret-alone",
        {
            "type": BEDROCK,
            "bedrock": pb.BedrockSettingsInput(region="us-east-1", access_key_secret=AWS_SECRET),
        },
        "bedrock.access_key",
    ),
    (
        "bedrock-padded-secret",
        {
            "type": BEDROCK,
            "bedrock": pb.BedrockSettingsInput(
                region="us-east-1", access_key=AWS_KEY, access_key_secret=AWS_SECRET + " "
            ),
        },
        "bedrock.access_key_secret",
    ),
    (
        "bedrock-bad-role-arn",
        {"type": BEDROCK, "bedrock": pb.BedrockSettingsInput(region="us-east-1", role_arn="admin")},
        "bedrock.role_arn",
    ),
    ("display-name-too-long", {"display_name": "x" * 201}, "display_name"),
    ("display-name-newline", {"display_name": "two\nlines"}, "display_name"),
]


@pytest.mark.parametrize(
    ("fields", "field"), [c[1:] for c in CREATE_CASES], ids=[c[0] for c in CREATE_CASES]
)
async def test_create_rejects_invalid_input_naming_the_field(
    service: Service, fields: dict[str, Any], field: str
) -> None:
    """Each create validation rule answers INVALID_ARGUMENT naming the field, without echoing a secret."""
    request = {"name": "valid-name", "type": OPENAI, **fields}
    err = await rpc_error(
        stub(service).CreateProvider(pb.CreateProviderRequest(**request), metadata=owner(service))
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert (err.details() or "").startswith(f"{field}: "), err.details()
    assert_no_secret(err.details() or "")
    assert not await asyncio.to_thread(provider_rows, service)


def key(id: str = "", secret: str = "") -> pb.KeyInput:
    return pb.KeyInput(id=id) if id else pb.KeyInput(secret=secret) if secret else pb.KeyInput()


UPDATE_CASES: list[tuple[str, str, list[str], dict[str, Any], str]] = [
    ("empty-mask", "target", [], {}, "update_mask"),
    ("unknown-path", "target", ["colour"], {}, "update_mask"),
    ("name-immutable", "target", ["name"], {}, "update_mask"),
    ("type-immutable", "target", ["type"], {}, "update_mask"),
    ("bad-id-or-name", "Not A Name!", ["enabled"], {}, "id_or_name"),
    ("empty-id-or-name", "", ["enabled"], {}, "id_or_name"),
    ("bad-base-url", "target", ["base_url"], {"base_url": "mailto:x@example.com"}, "base_url"),
    (
        "display-name-too-long",
        "target",
        ["display_name"],
        {"display_name": "y" * 201},
        "display_name",
    ),
    ("unknown-key-id", "target", ["keys"], {"keys": [key(id=str(uuid.uuid4()))]}, "keys[0].id"),
    ("other-providers-key-id", "target", ["keys"], {"keys": ["OTHER"]}, "keys[0].id"),
    ("key-without-id-or-secret", "target", ["keys"], {"keys": [key()]}, "keys[0]"),
    ("padded-new-key", "target", ["keys"], {"keys": [key(secret=K3 + " ")]}, "keys[0].secret"),
    (
        "six-keys",
        "target",
        ["keys"],
        {"keys": [key(secret=k) for k in (K1, K2, K3, K4, K5, K6)]},
        "keys",
    ),
    (
        "duplicate-new-keys",
        "target",
        ["keys"],
        {"keys": [key(secret=K3), key(secret=K3)]},
        "keys[1].secret",
    ),
    (
        "new-key-equals-kept-key",
        "target",
        ["keys"],
        {"keys": ["KEEP0", key(secret=K1)]},
        "keys[1].secret",
    ),
    ("key-id-twice", "target", ["keys"], {"keys": ["KEEP0", "KEEP0"]}, "keys[1].id"),
    (
        "bedrock-on-openai",
        "target",
        ["bedrock.region"],
        {"bedrock": pb.BedrockSettingsInput(region="us-east-1")},
        "bedrock",
    ),
    ("keys-on-copilot", "gh", ["keys"], {"keys": [key(secret=K3)]}, "keys"),
]


@pytest.mark.parametrize(
    ("target", "paths", "fields", "field"),
    [c[1:] for c in UPDATE_CASES],
    ids=[c[0] for c in UPDATE_CASES],
)
async def test_update_rejects_invalid_input_naming_the_field(
    service: Service, target: str, paths: list[str], fields: dict[str, Any], field: str
) -> None:
    """Each update validation rule answers INVALID_ARGUMENT naming the field and changes nothing."""
    created = await create(service, name="target", keys=[K1, K2])
    other = await create(service, name="other", keys=[K4])
    await create(service, name="gh", type=COPILOT)
    keys = [
        key(id=other.keys[0].id)
        if k == "OTHER"
        else key(id=created.keys[0].id)
        if k == "KEEP0"
        else k
        for k in fields.get("keys", [])
    ]
    if "keys" in fields:
        fields = {**fields, "keys": keys}
    version = service.running.hub.version
    err = await rpc_error(
        stub(service).UpdateProvider(
            pb.UpdateProviderRequest(id_or_name=target, update_mask=mask(*paths), **fields),
            metadata=owner(service),
        )
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert (err.details() or "").startswith(f"{field}: "), err.details()
    assert_no_secret(err.details() or "")
    assert service.running.hub.version == version
    got = await stub(service).GetProvider(
        pb.GetProviderRequest(id_or_name="target"), metadata=owner(service)
    )
    assert got.provider == created


async def test_update_mask_messages(service: Service) -> None:
    """An empty mask asks for at least one path; name and type are reported as immutable."""
    await create(service, name="target", keys=[K1])
    api = stub(service)
    empty = await rpc_error(
        api.UpdateProvider(pb.UpdateProviderRequest(id_or_name="target"), metadata=owner(service))
    )
    assert "at least one path" in (empty.details() or "")
    for path in ("name", "type"):
        err = await rpc_error(
            api.UpdateProvider(
                pb.UpdateProviderRequest(id_or_name="target", update_mask=mask(path)),
                metadata=owner(service),
            )
        )
        assert "immutable" in (err.details() or "")


# ----------------------------------------------------------------------------- conflicts


async def test_duplicate_live_name_is_already_exists(service: Service) -> None:
    """Creating a second live provider with a taken name answers ALREADY_EXISTS and stores nothing."""
    await create(service, name="dup", keys=[K1])
    err = await rpc_error(
        stub(service).CreateProvider(
            pb.CreateProviderRequest(name="dup", type=ANTHROPIC, keys=[K2]), metadata=owner(service)
        )
    )
    assert err.code() is grpc.StatusCode.ALREADY_EXISTS
    assert err.details() == "provider 'dup' already exists"
    assert len(await asyncio.to_thread(provider_rows, service)) == 1


async def test_concurrent_creates_of_one_name_yield_one_provider(service: Service) -> None:
    """Racing creates of the same name: exactly one succeeds, the others are ALREADY_EXISTS."""
    api = stub(service)
    results = await asyncio.gather(
        *(
            api.CreateProvider(
                pb.CreateProviderRequest(
                    name="race", type=OPENAI, keys=[f"sk-race-{i:02d}-0123456789"]
                ),
                metadata=owner(service),
            )
            for i in range(6)
        ),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, pb.CreateProviderResponse)]
    errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1
    assert {e.code() for e in errors} == {grpc.StatusCode.ALREADY_EXISTS}


@pytest.mark.parametrize("ref", ["missing", "00000000-0000-4000-8000-000000000000"])
async def test_unknown_provider_is_not_found(service: Service, ref: str) -> None:
    """Get, Update and Delete of an unknown name or id answer NOT_FOUND."""
    api = stub(service)
    md = owner(service)
    calls = [
        api.GetProvider(pb.GetProviderRequest(id_or_name=ref), metadata=md),
        api.UpdateProvider(
            pb.UpdateProviderRequest(id_or_name=ref, update_mask=mask("enabled")), metadata=md
        ),
        api.DeleteProvider(pb.DeleteProviderRequest(id_or_name=ref), metadata=md),
    ]
    for call in calls:
        assert (await rpc_error(call)).code() is grpc.StatusCode.NOT_FOUND


async def test_soft_delete_frees_the_name(service: Service) -> None:
    """Delete hides the provider (NOT_FOUND after, twice too), keeps the row disabled, and frees the name."""
    first = await create(service, name="gone", keys=[K1])
    api = stub(service)
    md = owner(service)
    await api.DeleteProvider(pb.DeleteProviderRequest(id_or_name="gone"), metadata=md)
    for ref in ("gone", first.id):
        err = await rpc_error(api.GetProvider(pb.GetProviderRequest(id_or_name=ref), metadata=md))
        assert err.code() is grpc.StatusCode.NOT_FOUND
        err = await rpc_error(
            api.DeleteProvider(pb.DeleteProviderRequest(id_or_name=ref), metadata=md)
        )
        assert err.code() is grpc.StatusCode.NOT_FOUND
        err = await rpc_error(
            api.UpdateProvider(
                pb.UpdateProviderRequest(id_or_name=ref, update_mask=mask("enabled"), enabled=True),
                metadata=md,
            )
        )
        assert err.code() is grpc.StatusCode.NOT_FOUND
    listed = await api.ListProviders(pb.ListProvidersRequest(), metadata=md)
    assert not listed.providers
    assert "gone" not in {p.name for p in (await snapshot(service)).providers}
    again = await create(service, name="gone", type=ANTHROPIC, keys=[K2])
    assert again.id != first.id
    rows = {r.id: r for r in await asyncio.to_thread(provider_rows, service)}
    assert rows[first.id].deleted and not rows[first.id].enabled
    assert not rows[again.id].deleted


# ----------------------------------------------------------------------------- updates


async def test_update_keys_keep_insert_delete(service: Service) -> None:
    """An update's keys are the desired set: listed ids kept, new secrets appended in order, the rest deleted."""
    created = await create(service, name="keys", keys=[K1, K2, K3])
    k1, k2, k3 = (k.id for k in created.keys)
    updated = await update(
        service,
        "keys",
        ["keys"],
        keys=[key(id=k3), key(secret=K4), key(id=k1), key(secret=K5)],
    )
    assert [k.id for k in updated.keys][:2] == [k1, k3]
    assert [k.hint for k in updated.keys] == [
        "sk-t...0c1d",
        "sk-t...5d3a",
        "sk-t...6e4b",
        "sk-t...5f5c",
    ]
    assert updated.key_count == 4
    assert_no_secret(updated.SerializeToString())
    stored = {k.id for k in await asyncio.to_thread(key_rows, service, created.id)}
    assert k2 not in stored and {k1, k3} <= stored and len(stored) == 4
    (pool,) = [p for p in (await snapshot(service)).providers if p.name == "keys"]
    assert [k.secret for k in pool.keys] == [K1, K3, K4, K5]
    cleared = await update(service, "keys", ["keys"])
    assert cleared.key_count == 0
    assert not await asyncio.to_thread(key_rows, service, created.id)


async def test_update_can_replace_all_five_keys(service: Service) -> None:
    """Replacing a full pool of five with five new keys succeeds (old keys go before new ones come)."""
    created = await create(service, name="full", keys=[K1, K2, K3, K4, K5])
    secrets = [f"sk-new-{i}-0123456789abcdef" for i in range(5)]
    updated = await update(service, "full", ["keys"], keys=[key(secret=s) for s in secrets])
    assert updated.key_count == 5
    assert not {k.id for k in created.keys} & {k.id for k in updated.keys}
    (pool,) = [p for p in (await snapshot(service)).providers if p.name == "full"]
    assert [k.secret for k in pool.keys] == secrets


async def test_etag_changes_with_every_write_and_guards_updates(service: Service) -> None:
    """Reads return a stable etag, every write changes it, a stale etag is FAILED_PRECONDITION naming `etag`, an empty one is unconditional."""
    api, md = stub(service), owner(service)
    created = await create(service, name="guarded", keys=[K1])
    read = (
        await api.GetProvider(pb.GetProviderRequest(id_or_name="guarded"), metadata=md)
    ).provider
    assert created.etag and read.etag == created.etag
    (listed,) = (await api.ListProviders(pb.ListProvidersRequest(), metadata=md)).providers
    assert listed.etag == created.etag
    renamed = await update(
        service, "guarded", ["display_name"], display_name="Guarded", etag=created.etag
    )
    assert renamed.etag != created.etag
    err = await rpc_error(
        api.UpdateProvider(
            pb.UpdateProviderRequest(
                id_or_name="guarded",
                update_mask=mask("display_name"),
                display_name="Stale",
                etag=created.etag,
            ),
            metadata=md,
        )
    )
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert str(err.details()).startswith("etag: ") and "re-read" in str(err.details())
    added = await api.AddProviderKey(
        pb.AddProviderKeyRequest(id_or_name="guarded", secret=K2), metadata=md
    )
    assert added.provider.etag not in (created.etag, renamed.etag)
    unconditional = await update(service, "guarded", ["display_name"], display_name="Any")
    assert unconditional.display_name == "Any"
    after = (
        await api.GetProvider(pb.GetProviderRequest(id_or_name="guarded"), metadata=md)
    ).provider
    assert after.etag == unconditional.etag


async def test_add_and_delete_one_key(service: Service) -> None:
    """AddProviderKey appends one key and returns it masked; DeleteProviderKey removes one by id; both are audited."""
    api, md = stub(service), owner(service)
    created = await create(service, name="pool", keys=[K1, K2])
    added = await api.AddProviderKey(
        pb.AddProviderKeyRequest(id_or_name="pool", secret=K3), metadata=md
    )
    assert added.key.hint == "sk-t...5d3a" and not added.key.secret
    assert [k.id for k in added.provider.keys] == [*(k.id for k in created.keys), added.key.id]
    removed = await api.DeleteProviderKey(
        pb.DeleteProviderKeyRequest(id_or_name="pool", key_id=created.keys[0].id.upper()),
        metadata=md,
    )
    assert [k.id for k in removed.provider.keys] == [created.keys[1].id, added.key.id]
    (pool,) = [p for p in (await snapshot(service)).providers if p.name == "pool"]
    assert [k.secret for k in pool.keys] == [K2, K3]
    rows = (await asyncio.to_thread(audit_rows, service))[-2:]
    assert [r.action for r in rows] == ["provider.key.add", "provider.key.delete"]
    assert_no_secret("".join((r.before or "") + (r.after or "") for r in rows))
    assert_no_secret(added.SerializeToString() + removed.SerializeToString())


async def test_key_operations_refuse_clearly(service: Service) -> None:
    """A full pool, a duplicate, an unknown or malformed key id, a stale etag and a keyless type each get a clear error."""
    api, md = stub(service), owner(service)
    full = await create(service, name="full-pool", keys=[K1, K2, K3, K4, K5])
    await create(service, name="copilot", type=COPILOT)

    def add(name: str, secret: str) -> Any:
        return api.AddProviderKey(
            pb.AddProviderKeyRequest(id_or_name=name, secret=secret), metadata=md
        )

    def delete(key_id: str, etag: str = "") -> Any:
        request = pb.DeleteProviderKeyRequest(id_or_name="full-pool", key_id=key_id, etag=etag)
        return api.DeleteProviderKey(request, metadata=md)

    code = grpc.StatusCode
    cases: list[tuple[Any, grpc.StatusCode, str]] = [
        (add("full-pool", K6), code.FAILED_PRECONDITION, "already has 5 keys"),
        (delete(str(uuid.uuid4())), code.NOT_FOUND, "has no key"),
        (delete(K1), code.INVALID_ARGUMENT, "key_id: must be a key id"),
        (delete(full.keys[0].id, etag="stale"), code.FAILED_PRECONDITION, "etag: "),
        (add("copilot", K6), code.INVALID_ARGUMENT, "takes no API keys"),
        (add("copilot", ""), code.INVALID_ARGUMENT, "secret: is empty"),
    ]
    for call, code, text in cases:
        err = await rpc_error(call)
        assert err.code() is code, err
        assert text in str(err.details()), err.details()
        assert_no_secret(str(err.details()))
    dup = await api.DeleteProviderKey(
        pb.DeleteProviderKeyRequest(id_or_name="full-pool", key_id=full.keys[4].id), metadata=md
    )
    err = await rpc_error(
        api.AddProviderKey(pb.AddProviderKeyRequest(id_or_name="full-pool", secret=K1), metadata=md)
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "secret: duplicate key" in str(err.details())
    assert dup.provider.key_count == 4


async def test_update_scalar_fields(service: Service) -> None:
    """display_name, base_url and enabled change only when in the mask; an empty base_url restores the default."""
    await create(service, name="fields", keys=[K1], display_name="Fields")
    updated = await update(
        service,
        "fields",
        ["base_url", "enabled"],
        base_url="https://proxy.example.com/v1/",
        display_name="ignored",
    )
    assert updated.base_url == "https://proxy.example.com/v1/"
    assert updated.status == provider_pb2.PROVIDER_STATUS_DISABLED
    assert updated.display_name == "Fields"
    updated = await update(service, "fields", ["display_name", "base_url"], display_name="")
    assert updated.display_name == "fields"
    assert updated.base_url == "https://api.openai.com/v1/"
    assert updated.key_count == 1


async def test_update_bedrock_field_keeps_the_rest(service: Service) -> None:
    """Updating bedrock.region keeps the credentials and models, and a derived base URL follows the region."""
    bedrock = with_aws_keys("us-east-1", model="m-big")
    await create(service, name="aws", type=BEDROCK, bedrock=bedrock)
    updated = await update(
        service, "aws", ["bedrock.region"], bedrock=pb.BedrockSettingsInput(region="eu-central-1")
    )
    assert updated.bedrock.region == "eu-central-1"
    assert updated.bedrock.model == "m-big"
    assert updated.bedrock.has_static_credentials
    assert updated.base_url == "https://bedrock-runtime.eu-central-1.amazonaws.com"
    (aws,) = [p for p in (await snapshot(service)).providers if p.name == "aws"]
    assert aws.bedrock.access_key_secret == AWS_SECRET
    replaced = await update(
        service, "aws", ["bedrock"], bedrock=pb.BedrockSettingsInput(region="eu-central-1")
    )
    assert not replaced.bedrock.has_static_credentials
    assert replaced.bedrock.model == "global.anthropic.claude-sonnet-4-5-20250929-v1:0"


async def test_update_bedrock_credentials_must_pair(service: Service) -> None:
    """Setting only bedrock.access_key on a provider without a secret is INVALID_ARGUMENT."""
    await create(
        service, name="aws", type=BEDROCK, bedrock=pb.BedrockSettingsInput(region="us-east-1")
    )
    err = await rpc_error(
        stub(service).UpdateProvider(
            pb.UpdateProviderRequest(
                id_or_name="aws",
                update_mask=mask("bedrock.access_key"),
                bedrock=pb.BedrockSettingsInput(access_key=AWS_KEY),
            ),
            metadata=owner(service),
        )
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith("bedrock.access_key_secret: ")


# ----------------------------------------------------------------------------- propagation


async def test_writes_reach_an_open_stream_before_the_response(service: Service) -> None:
    """Create, update and delete each bump the version and are on an open bridge stream when they return."""
    call = cpb_grpc.ConfigServiceStub(service.channel()).WatchProviders(
        cpb.WatchProvidersRequest(node_id="admin-test"), metadata=service.md_for(Role.BRIDGE)
    )
    first = await asyncio.wait_for(call.read(), 10)
    assert isinstance(first, cpb.WatchProvidersResponse)
    versions = [int(first.snapshot.version)]

    async def next_snapshot() -> cpb.ProviderSnapshot:
        # Published before the write answered: it is already on the stream.
        response = await asyncio.wait_for(call.read(), 2)
        assert isinstance(response, cpb.WatchProvidersResponse)
        versions.append(int(response.snapshot.version))
        revision = await asyncio.to_thread(service.running.db.revision)
        assert versions[-1] == revision
        return response.snapshot

    created = await create(service, name="live", keys=[K1])
    snap = await next_snapshot()
    assert [k.secret for p in snap.providers if p.name == "live" for k in p.keys] == [K1]
    await update(service, created.id, ["keys"], keys=[key(id=created.keys[0].id), key(secret=K2)])
    snap = await next_snapshot()
    assert [k.secret for p in snap.providers if p.name == "live" for k in p.keys] == [K1, K2]
    await stub(service).DeleteProvider(
        pb.DeleteProviderRequest(id_or_name="live"), metadata=owner(service)
    )
    snap = await next_snapshot()
    assert "live" not in {p.name for p in snap.providers}
    assert versions == [versions[0] + i for i in range(4)]
    call.cancel()


async def test_rejected_write_changes_no_version(service: Service) -> None:
    """A rejected write neither bumps the revision nor writes an audit row."""
    await create(service, name="stay", keys=[K1])
    revision = await asyncio.to_thread(service.running.db.revision)
    audits = len(await asyncio.to_thread(audit_rows, service))
    await rpc_error(
        stub(service).CreateProvider(
            pb.CreateProviderRequest(name="stay", type=OPENAI), metadata=owner(service)
        )
    )
    await rpc_error(
        stub(service).UpdateProvider(
            pb.UpdateProviderRequest(id_or_name="stay", update_mask=mask("keys"), keys=[key()]),
            metadata=owner(service),
        )
    )
    assert await asyncio.to_thread(service.running.db.revision) == revision
    assert len(await asyncio.to_thread(audit_rows, service)) == audits


# ----------------------------------------------------------------------------- audit and secrets


async def test_every_write_is_audited_with_masked_values(service: Service) -> None:
    """Create, update and delete each append one audit row at the new revision, with masked before/after views."""
    start = len(await asyncio.to_thread(audit_rows, service))
    created = await create(service, name="audited", keys=[K1, K2])
    await update(service, "audited", ["keys"], keys=[key(id=created.keys[1].id), key(secret=K3)])
    await stub(service).DeleteProvider(
        pb.DeleteProviderRequest(id_or_name="audited"), metadata=owner(service)
    )
    rows = (await asyncio.to_thread(audit_rows, service))[start:]
    assert [r.action for r in rows] == ["provider.create", "provider.update", "provider.delete"]
    assert all(r.resource_id == created.id and r.resource_name == "audited" for r in rows)
    assert all(r.actor_name == "env:admin" for r in rows)
    assert [r.revision for r in rows] == sorted({r.revision for r in rows})
    assert rows[-1].revision == await asyncio.to_thread(service.running.db.revision)
    for row in rows:
        assert_no_secret((row.before or "") + (row.after or ""))
    create_after = json.loads(rows[0].after or "{}")
    assert rows[0].before is None
    assert [k["hint"] for k in create_after["keys"]] == ["sk-t...0c1d", "sk-t...1e2f"]
    update_after = json.loads(rows[1].after or "{}")
    extra = update_after["additional"]
    assert [a["hint"] for a in extra["added"]] == ["sk-t...5d3a"]
    assert [r["id"] for r in extra["removed"]] == [created.keys[0].id]
    assert extra["kept"] == 1
    assert json.loads(rows[1].before or "{}")["keys"][0]["id"] == created.keys[0].id
    delete_after = json.loads(rows[2].after or "{}")
    assert delete_after["deleted"] is True and delete_after["enabled"] is False


async def test_no_plaintext_in_responses_audit_logs_or_errors(service: Service) -> None:
    """No secret appears in any admin response, audit row, captured log line or error message."""
    api = stub(service)
    md = owner(service)
    seen: list[bytes] = []
    with capture_logs() as logs:
        created = await create(service, name="leak", keys=[K1, K2])
        seen.append(created.SerializeToString())
        bedrock = await create(
            service, name="aws", type=BEDROCK, bedrock=with_aws_keys("us-east-1")
        )
        seen.append(bedrock.SerializeToString())
        updated = await update(service, "leak", ["keys"], keys=[key(secret=K3), key(secret=K4)])
        seen.append(updated.SerializeToString())
        for role in (Role.OWNER, Role.AUDITOR, Role.BRIDGE, Role.PROXY):
            listed = await api.ListProviders(
                pb.ListProvidersRequest(), metadata=service.md_for(role)
            )
            seen.append(listed.SerializeToString())
            got = await api.GetProvider(
                pb.GetProviderRequest(id_or_name="aws"), metadata=service.md_for(role)
            )
            seen.append(got.SerializeToString())
        failures = [
            api.CreateProvider(
                pb.CreateProviderRequest(name="x", type=OPENAI, keys=[K5, K5]), metadata=md
            ),
            api.CreateProvider(
                pb.CreateProviderRequest(name="x", type=COPILOT, keys=[K5]), metadata=md
            ),
            api.CreateProvider(pb.CreateProviderRequest(name=K5, type=OPENAI), metadata=md),
            api.GetProvider(pb.GetProviderRequest(id_or_name=K6), metadata=md),
            api.UpdateProvider(
                pb.UpdateProviderRequest(id_or_name="leak", update_mask=mask(K6)), metadata=md
            ),
            api.UpdateProvider(
                pb.UpdateProviderRequest(
                    id_or_name="leak", update_mask=mask("keys"), keys=[key(secret=K6 + " ")]
                ),
                metadata=md,
            ),
            api.ListProviders(pb.ListProvidersRequest(), metadata=Service.md(K6)),
        ]
        for call in failures:
            err = await rpc_error(call)
            assert err.code() is not grpc.StatusCode.INTERNAL
            seen.append((err.details() or "").encode())
    assert any(entry.get("event") == "provider created" for entry in logs)
    seen.append(repr(logs).encode())
    for row in await asyncio.to_thread(audit_rows, service):
        seen.append(((row.before or "") + (row.after or "")).encode())
    for blob in seen:
        assert_no_secret(blob)


async def test_byok_disabled_reports_keyless_provider_as_error(start_service: StartService) -> None:
    """With BYOK disabled a keyless OpenAI provider is created but reported with status ERROR and a reason."""
    service = await start_service(AIBRIDGE_ALLOW_BYOK="false")
    created = await create(service, name="keyless")
    assert created.status == provider_pb2.PROVIDER_STATUS_ERROR
    assert "BYOK" in created.status_reason


# ----------------------------------------------------------------------------- RBAC

READ = {
    Role.OWNER: "OK",
    Role.AUDITOR: "OK",
    Role.MEMBER: "PERMISSION_DENIED",
    Role.BRIDGE: "OK",
    Role.PROXY: "OK",
    None: "UNAUTHENTICATED",
}
WRITE = {
    Role.OWNER: "OK",
    Role.AUDITOR: "PERMISSION_DENIED",
    Role.MEMBER: "PERMISSION_DENIED",
    Role.BRIDGE: "PERMISSION_DENIED",
    Role.PROXY: "PERMISSION_DENIED",
    None: "UNAUTHENTICATED",
}


async def call_as(
    api: pb_grpc.ProviderAdminServiceStub, method: str, i: int, md: tuple[tuple[str, str], ...]
) -> str:
    """Run one admin RPC (targets indexed by `i`); the status code name, or OK."""
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "ListProviders": lambda: api.ListProviders(pb.ListProvidersRequest(), metadata=md),
        "GetProvider": lambda: api.GetProvider(
            pb.GetProviderRequest(id_or_name="readable"), metadata=md
        ),
        "CreateProvider": lambda: api.CreateProvider(
            pb.CreateProviderRequest(name=f"new-{i}", type=COPILOT), metadata=md
        ),
        "UpdateProvider": lambda: api.UpdateProvider(
            pb.UpdateProviderRequest(
                id_or_name=f"target-{i}", update_mask=mask("display_name"), display_name="x"
            ),
            metadata=md,
        ),
        "DeleteProvider": lambda: api.DeleteProvider(
            pb.DeleteProviderRequest(id_or_name=f"target-{i}"), metadata=md
        ),
    }
    try:
        await calls[method]()
    except grpc.aio.AioRpcError as err:
        return err.code().name
    return "OK"


async def test_rbac_matrix(service: Service) -> None:
    """Every admin RPC answers each role (and no token) with the code DESIGN §4 documents."""
    api = stub(service)
    roles: list[Role | None] = [*Role, None]
    await create(service, name="readable", keys=[K1])
    for i in range(len(roles)):
        await create(service, name=f"target-{i}", keys=[f"sk-rbac-{i}-0123456789abcdef"])
    mismatches = []
    expected = {
        "ListProviders": READ,
        "GetProvider": READ,
        "CreateProvider": WRITE,
        "UpdateProvider": WRITE,
        "DeleteProvider": WRITE,
    }
    for i, role in enumerate(roles):
        md = service.md_for(role) if role is not None else ()
        for method, codes in expected.items():  # one at a time: update before delete
            got = await call_as(api, method, i, md)
            if got != codes[role]:
                mismatches.append(f"{method} as {role}: {got}, expected {codes[role]}")
    assert not mismatches


async def test_scopes_of_admin_reads(service: Service) -> None:
    """Admin reads show masked hints to owner, auditor and bridge, and no key material to the proxy."""
    await create(service, name="scoped", keys=[K1])
    api = stub(service)
    for role in (Role.OWNER, Role.AUDITOR, Role.BRIDGE):
        got = await api.GetProvider(
            pb.GetProviderRequest(id_or_name="scoped"), metadata=service.md_for(role)
        )
        assert [k.hint for k in got.provider.keys] == ["sk-t...0c1d"]
        assert not got.provider.keys[0].secret
    proxy = await api.GetProvider(
        pb.GetProviderRequest(id_or_name="scoped"), metadata=service.md_for(Role.PROXY)
    )
    assert not proxy.provider.keys and proxy.provider.key_count == 1


async def test_authorization_precedes_validation(service: Service) -> None:
    """A role that may not write gets PERMISSION_DENIED even for an invalid request."""
    api = stub(service)
    for role in (Role.AUDITOR, Role.MEMBER, Role.BRIDGE, Role.PROXY):
        md = service.md_for(role)
        err = await rpc_error(
            api.CreateProvider(pb.CreateProviderRequest(name="BAD!", type=99), metadata=md)  # type: ignore[arg-type]
        )
        assert err.code() is grpc.StatusCode.PERMISSION_DENIED
        err = await rpc_error(
            api.UpdateProvider(pb.UpdateProviderRequest(id_or_name="Not Valid"), metadata=md)
        )
        assert err.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_unique_index_race_is_already_exists(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a concurrent create slips past the name check, the unique index's violation becomes ALREADY_EXISTS."""
    await create(service, name="raced", keys=[K1])
    monkeypatch.setattr(providers, "_name_taken", lambda session, name: False)
    spec = rulebook.ProviderSpec(name="raced", type="openai", keys=(K2,))
    with pytest.raises(AlreadyExists, match="'raced' already exists"):
        await asyncio.to_thread(providers.create_provider, service.running.db, SYSTEM, spec)
    assert len(await asyncio.to_thread(provider_rows, service)) == 1
