"""Secret hygiene across the whole stack (config service with encryption at rest, bridge
with dumps, proxy): distinctive key and token values are driven through success, error
and auth-failure paths, then every log line, dump, error body, metrics page, non-bridge
snapshot, admin answer and the database itself are scanned for them.

Gateway tokens legitimately appear in client requests only (and a CreateToken answer
shows its new secret once); provider keys and Bedrock credentials only in the bridge
scope and on the wire to the upstream.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import provider_admin_service_pb2 as ppb
from aibridge.config.v1 import token_admin_service_pb2 as tpb
from aibridge.config.v1 import token_pb2, usage_pb2
from aibridge.config.v1 import usage_service_pb2 as us
from aibridge.config.v1 import usage_service_pb2_grpc as us_grpc
from aibridge.recording import new_record_id
from tests.fixtures.databases import schema_url
from tests.fixtures.services import ADMIN_TOKEN, BRIDGE_TOKEN, PROXY_TOKEN
from tests.fixtures.upstream import FakeUpstream, Seen, http_response
from tests.fixtures.waits import eventually
from tests.resilience.harness import (
    PROXY_MD,
    Admin,
    Procs,
    bridge_ready,
    bridge_url,
    dump_database_text,
    dumps_written,
    free_port,
    scan,
    sqlite_files,
    walk_files,
)


def canary(kind: str) -> str:
    return f"{kind}-CANARY{secrets.token_hex(12)}"


OPENAI_KEYS = [canary("sk-oai"), canary("sk-oai")]
ANTHROPIC_KEY = canary("sk-ant")
API_KEYS = [canary("sk-api"), canary("sk-api")]
ROTATED_KEY = canary("sk-rot")
BEDROCK_ACCESS_KEY = "AKIA" + secrets.token_hex(8).upper()
BEDROCK_SECRET = canary("aws-secret")
BYOK_KEY = canary("sk-byok")
WRONG_TOKEN = canary("aib-wrong")
ENCRYPTION_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
PROVIDER_SECRETS = [*OPENAI_KEYS, ANTHROPIC_KEY, *API_KEYS, ROTATED_KEY, BEDROCK_SECRET]
TOKENS = [ADMIN_TOKEN, BRIDGE_TOKEN, PROXY_TOKEN, WRONG_TOKEN, ENCRYPTION_KEY]


def needles(values: list[str]) -> Iterator[str]:
    """Each value and its middle (masks show a few characters at each end only)."""
    for value in values:
        yield value
        if len(value) >= 24:
            yield value[6:-6]


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url
        return
    schema = request.getfixturevalue("pg_schema")
    yield schema_url(*schema)


async def _record_with_a_key_as_hint(target: str, key: str) -> dict[str, bytes]:
    """Record an interception whose credential hint is a whole provider key (a bridge bug);
    the answers of reading it back, to be scanned with the database."""
    record = usage_pb2.Interception(
        id=new_record_id(),
        provider_name="seeded-openai",
        outcome=usage_pb2.OUTCOME_COMPLETED,
        credential_kind=usage_pb2.CREDENTIAL_KIND_POOLED,
        credential_hint=key,
    )
    record.started_at.GetCurrentTime()
    record.ended_at.CopyFrom(record.started_at)
    owner = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = us_grpc.UsageServiceStub(channel)
        await stub.RecordInterceptions(
            us.RecordInterceptionsRequest(interceptions=[record]),
            metadata=(("authorization", f"Bearer {BRIDGE_TOKEN}"),),
            timeout=10,
        )
        listed = await stub.ListInterceptions(
            us.ListInterceptionsRequest(), metadata=owner, timeout=10
        )
        got = await stub.GetInterception(
            us.GetInterceptionRequest(id=record.id), metadata=owner, timeout=10
        )
    assert got.interception.credential_hint  # stored, masked
    return {
        "ListInterceptions": listed.SerializeToString(),
        "GetInterception": got.SerializeToString(),
    }


async def test_no_secret_leaks_anywhere(
    procs: Procs, upstream: FakeUpstream, any_db: str, tmp_path: Path
) -> None:
    """No provider key, Bedrock secret, service token, wrong token or encryption key appears in any log, dump, error body, metrics page, proxy/auditor snapshot, admin or usage answer or database byte."""

    async def by_key(req: Seen, _r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        auth = req.headers.get("authorization", "") + req.headers.get("x-api-key", "")
        if OPENAI_KEYS[0] in auth:  # the first pooled key is refused: failover to the second
            w.write(http_response(401, b'{"error":{"message":"invalid key"}}'))
        elif "/broken/" in req.path:
            w.write(http_response(500, b'{"error":{"message":"upstream exploded"}}'))
        else:
            w.write(http_response(200, b'{"id":"x","usage":{"prompt_tokens":1}}'))
        await w.drain()

    upstream.default = by_key
    metrics_port = free_port()
    env = {
        "AIBRIDGE_ENCRYPTION_KEYS": ENCRYPTION_KEY,
        "AIBRIDGE_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        "AIBRIDGE_LOG_LEVEL": "debug",
        "AIBRIDGE_PROVIDER_0_TYPE": "openai",
        "AIBRIDGE_PROVIDER_0_NAME": "seeded-openai",
        "AIBRIDGE_PROVIDER_0_KEYS": ",".join(OPENAI_KEYS),
        "AIBRIDGE_PROVIDER_0_BASE_URL": f"{upstream.url}/v1/",
        "AIBRIDGE_PROVIDER_1_TYPE": "anthropic",
        "AIBRIDGE_PROVIDER_1_NAME": "seeded-anthropic",
        "AIBRIDGE_PROVIDER_1_KEY": ANTHROPIC_KEY,
        "AIBRIDGE_PROVIDER_1_BASE_URL": f"{upstream.url}/",
        "AIBRIDGE_PROVIDER_2_TYPE": "bedrock",
        "AIBRIDGE_PROVIDER_2_NAME": "seeded-bedrock",
        "AIBRIDGE_PROVIDER_2_BEDROCK_REGION": "us-east-1",
        "AIBRIDGE_PROVIDER_2_BEDROCK_BASE_URL": f"{upstream.url}/bedrock",
        "AIBRIDGE_PROVIDER_2_BEDROCK_ACCESS_KEY": BEDROCK_ACCESS_KEY,
        "AIBRIDGE_PROVIDER_2_BEDROCK_ACCESS_KEY_SECRET": BEDROCK_SECRET,
    }
    service = await asyncio.to_thread(procs.config_service, any_db, 0, "cs", **env)
    target = service.ready["target"]
    admin = Admin(target)
    answers: dict[str, bytes] = {}
    try:
        created = await admin.create_provider(
            "api-openai", 1, f"{upstream.url}/broken/v1/", API_KEYS
        )
        kept = [ppb.KeyInput(id=created.keys[0].id), ppb.KeyInput(secret=ROTATED_KEY)]
        updated = await admin.providers.UpdateProvider(
            ppb.UpdateProviderRequest(
                id_or_name="api-openai",
                update_mask=field_mask_pb2.FieldMask(paths=["keys"]),
                keys=kept,
            ),
            metadata=admin.md,
            timeout=10,
        )
        answers["UpdateProvider"] = updated.SerializeToString()
        for call, request in (
            ("ListProviders", ppb.ListProvidersRequest()),
            ("GetProvider", ppb.GetProviderRequest(id_or_name="seeded-bedrock")),
        ):
            answers[call] = (
                await getattr(admin.providers, call)(request, metadata=admin.md, timeout=10)
            ).SerializeToString()
        # Bad admin input naming a secret must not echo it.
        for bad in (
            ppb.CreateProviderRequest(name="x", type=1, keys=[OPENAI_KEYS[0], OPENAI_KEYS[0]]),
            ppb.CreateProviderRequest(name=BEDROCK_SECRET.lower()[:60], type=99),
            ppb.CreateProviderRequest(name="y", type=1, base_url=API_KEYS[0]),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await admin.providers.CreateProvider(bad, metadata=admin.md, timeout=10)
            answers[f"CreateProvider error {bad.name}"] = str(refused.value.details()).encode()
        with pytest.raises(grpc.aio.AioRpcError) as unauth:
            await admin.providers.ListProviders(
                ppb.ListProvidersRequest(),
                metadata=(("authorization", f"Bearer {WRONG_TOKEN}"),),
                timeout=10,
            )
        answers["unauthenticated"] = str(unauth.value.details()).encode()
        member = await admin.create_token("alice")
        auditor = await admin.create_token("audrey", token_pb2.ROLE_AUDITOR)
        answers["ListTokens"] = (
            await admin.tokens.ListTokens(tpb.ListTokensRequest(), metadata=admin.md, timeout=10)
        ).SerializeToString()
        version = str(await admin.version())
        answers.update(await _record_with_a_key_as_hint(target, OPENAI_KEYS[1]))
    finally:
        await admin.close()

    dumps = tmp_path / "dumps"
    bridge = await asyncio.to_thread(
        procs.bridge, target, "bridge-secrets", AIBRIDGE_DUMP_DIR=str(dumps)
    )
    proxy_cache = tmp_path / "proxy-cache.pb"
    proxy = await asyncio.to_thread(
        procs.proxy,
        target,
        bridge_url(bridge),
        "proxy-secrets",
        AIBRIDGE_SNAPSHOT_CACHE=str(proxy_cache),
        AIBRIDGE_DUMP_DIR=str(dumps / "proxy"),
    )
    proxy_port = int(str(proxy.ready["listen"]).rsplit(":", 1)[1])

    await bridge_ready(bridge, version)
    await eventually(proxy_cache.exists)

    errors: dict[str, bytes] = {}
    chat = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    msg = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    member_auth = {"authorization": f"Bearer {member}"}
    calls = [
        ("POST", "/seeded-openai/v1/chat/completions", member_auth, chat),  # 401 then failover
        ("POST", "/seeded-openai/v1/chat/completions", member_auth, {**chat, "stream": True}),
        ("POST", "/seeded-anthropic/v1/messages", {"x-api-key": member}, msg),
        ("POST", "/seeded-bedrock/v1/messages", member_auth, msg),
        ("POST", "/api-openai/v1/chat/completions", member_auth, chat),  # upstream 500
        ("GET", "/api-openai/v1/models", member_auth, None),
        (
            "POST",
            "/seeded-openai/v1/chat/completions",
            {"x-aibridge-token": member, "authorization": f"Bearer {BYOK_KEY}"},
            chat,
        ),
        (
            "POST",
            "/seeded-openai/v1/chat/completions",
            {"authorization": f"Bearer {WRONG_TOKEN}"},
            chat,
        ),
        ("POST", "/seeded-openai/v1/chat/completions", {"x-api-key": BRIDGE_TOKEN}, chat),
        (
            "POST",
            "/seeded-openai/v1/chat/completions",
            {"authorization": f"Bearer {auditor}"},
            chat,
        ),
        ("POST", "/nope/v1/chat/completions", member_auth, chat),
    ]
    async with httpx.AsyncClient(base_url=bridge_url(bridge), timeout=15) as http:
        for i, (method, path, headers, body) in enumerate(calls):
            response = await http.request(method, path, headers=headers, json=body)
            if response.status_code >= 400:
                errors[f"bridge {i} {path} {response.status_code}"] = (
                    response.content + str(response.headers).encode()
                )
        pages = {
            "bridge /metrics": (await http.get("/metrics")).content,
            "bridge /readyz": (await http.get("/readyz")).content,
        }
    async with httpx.AsyncClient(timeout=15) as http:
        pages["config-service /metrics"] = (
            await http.get(f"http://127.0.0.1:{metrics_port}/metrics")
        ).content
        pages["proxy /metrics"] = (await http.get(f"http://127.0.0.1:{proxy_port}/metrics")).content
    for token, label in ((member, "member"), (WRONG_TOKEN, "wrong")):
        async with httpx.AsyncClient(
            proxy=f"http://user:{token}@127.0.0.1:{proxy_port}", timeout=15
        ) as via_proxy:
            try:
                response = await via_proxy.post(f"{upstream.url}/v1/chat/completions", json=chat)
                if response.status_code >= 400:
                    errors[f"proxy {label} {response.status_code}"] = response.content
            except httpx.HTTPError as exc:
                errors[f"proxy {label}"] = repr(exc).encode()
    # Dumps are written after each response; the 4 refused at the door are not forwarded.
    await eventually(lambda: dumps_written(bridge, dumps, len(calls) - 4))

    admin = Admin(target)
    try:
        bridge_snap = await admin.snapshot((("authorization", f"Bearer {BRIDGE_TOKEN}"),))
        proxy_snap = await admin.snapshot(PROXY_MD)
        auditor_snap = await admin.snapshot((("authorization", f"Bearer {auditor}"),))
        subscribers = await admin.config.ListSubscribers(
            cs.ListSubscribersRequest(), metadata=admin.md, timeout=10
        )
    finally:
        await admin.close()
    assert proxy_snap.providers and auditor_snap.providers
    # Positive control: the needles are the values the bridge really holds.
    live = [*OPENAI_KEYS, ANTHROPIC_KEY, API_KEYS[0], ROTATED_KEY, BEDROCK_SECRET]
    control = scan({"bridge": bridge_snap.SerializeToString()}, live)
    assert len(control) == len(live), control
    assert len(bridge.events("request")) >= len(calls) - 4

    places: dict[str, bytes] = {}
    for proc in procs.all:
        places[f"{proc.name} log"] = "".join(proc.lines).encode()
    for path in walk_files(dumps):
        places[f"dump {path.relative_to(dumps)}"] = path.read_bytes()
    places.update(errors)
    places.update(pages)
    places["proxy snapshot"] = proxy_snap.SerializeToString()
    places["auditor snapshot"] = auditor_snap.SerializeToString()
    places["ListSubscribers"] = subscribers.SerializeToString()
    places["proxy snapshot cache"] = proxy_cache.read_bytes()
    for name, data in answers.items():
        places[f"admin {name}"] = data
    places["CreateProvider/UpdateProvider"] = b"".join(admin.responses)
    if any_db.startswith("sqlite"):
        for path in sqlite_files(any_db):
            places[f"database file {path.name}"] = path.read_bytes()
    places["database text"] = await asyncio.to_thread(dump_database_text, any_db)

    assert len([p for p in places if p.startswith("dump ")]) >= 4, sorted(places)
    assert errors, "the error paths were not exercised"
    hits = scan(places, needles([*PROVIDER_SECRETS, *TOKENS, BYOK_KEY, member, auditor]))
    assert not hits, "secrets leaked:\n" + "\n".join(hits)
    # The access key id may be shown masked (metadata scope), never whole outside the bridge.
    hits = scan(places, [BEDROCK_ACCESS_KEY])
    assert not hits, hits
