"""Every kind of call, end to end, in `aibridge usage`: a real config service, a real bridge
shipping its records to it (recording on, default batching), a fake upstream answering with
known usage per API shape, the official OpenAI and Anthropic SDKs as two different members.

One stack per database serves the whole matrix once (blocking and streamed chat
completions, Responses and Anthropic messages, Bedrock, a tool-use round trip, BYOK, a key
failover, a 429 from an exhausted pool, an upstream failure, a client hanging up
mid-stream); every answer's `X-AIBridge-Request-Id` is kept. Then the real CLI, run as a
subprocess with an auditor's token, must list each call with the right principal, client,
outcome, provider, route, models, tokens, credential and attempts, show its tool calls, and
summarize to the sums of what it listed; a member running it sees only its own records.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import anthropic
import grpc
import httpx
import openai
import pytest

from aibridge.config.v1 import token_admin_service_pb2 as ta
from aibridge.config.v1 import token_admin_service_pb2_grpc as ta_grpc
from aibridge.config.v1 import token_pb2
from aibridge.config.v1 import usage_service_pb2 as pb
from aibridge.config.v1 import usage_service_pb2_grpc as pb_grpc
from aibridge.masking import mask_secret
from aibridge.recording import TOKEN_KINDS
from tests.cli.test_cli import run
from tests.conftest import fresh_database
from tests.data_plane import recorded_shapes as shapes
from tests.data_plane.bedrock.bedrock_testkit import (
    ChunkStream,
    Received,
    chunk_frame,
    json_ok,
    stream_ok,
)
from tests.e2e.fakes import ACCESS_KEY, REGION, SECRET_KEY, Upstream
from tests.e2e.test_bridge_e2e import wait_ready
from tests.fixtures.services import ADMIN_TOKEN, Procs
from tests.fixtures.upstream import Reply, Seen, ThreadedUpstream, anthropic_message, json_reply
from tests.fixtures.waits import eventually

ADMIN_MD = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
POOL_KEY = "sk-pool-MATRIX-0123456789abcdef"
ANT_KEY = "sk-ant-pool-MATRIX-0123456789abcd"
FAILING_KEY = "sk-pool-RATELIMITED-0123456789ab"  # the failover provider's first key: 429
SPARE_KEY = "sk-pool-SPARE-0123456789abcdefgh"
TIGHT_KEY = "sk-pool-TIGHT-0123456789abcdefgh"  # the only key of its provider: 429
BYOK_KEY = "sk-users-own-key-0000000000000000000"
BYOK_ANT_KEY = "sk-ant-users-own-key-111111111111111"
BROKEN_MODEL = "broken-model"  # the upstream answers 500
SLOW_MODEL = "slow-model"  # the upstream streams slowly (the client hangs up)
BEDROCK_MODEL = "claude-test-large"
TOOL_RESULT_TOKENS = (30, 7, 0, 0, 0)
NO_TOKENS = (0, 0, 0, 0, 0)
STARTED_TOKENS = (12, 1, 10240, 2048, 0)  # an Anthropic message_start's, before any delta
MESSAGES: Any = [{"role": "user", "content": "weather in Paris?"}]


def rate_limited() -> Reply:
    error = {"error": {"message": "slow down", "type": "rate_limit_error"}}
    reply = json_reply(error, 429)
    reply.headers["retry-after"] = "600"
    return reply


def bedrock_reply(got: Received) -> httpx.Response:
    """Bedrock answers as Anthropic does in recorded_shapes (tool call, cache tokens)."""
    if got.action == "invoke":
        return json_ok(json.loads(shapes.anthropic_blocking().body))
    return stream_ok(ChunkStream([chunk_frame(e) for _, e in shapes.anthropic_events()]))


class MatrixUpstream(Upstream):
    """Answers in the recorded shapes; a key, a model or a tool result picks other answers."""

    def __init__(self) -> None:
        super().__init__()
        self.bedrock.respond = bedrock_reply

    def default_reply(self, seen: Seen) -> Reply:
        doc = seen.json()
        stream = bool(doc.get("stream"))
        if seen.headers.get("authorization") in (f"Bearer {FAILING_KEY}", f"Bearer {TIGHT_KEY}"):
            return rate_limited()
        if doc.get("model") == BROKEN_MODEL:
            return json_reply({"error": {"message": "boom", "type": "server_error"}}, 500)
        if doc.get("model") == SLOW_MODEL:
            slow = shapes.anthropic_stream() if "/messages" in seen.path else shapes.chat_stream()
            slow.gap = 0.5
            return slow
        if seen.path.endswith("/chat/completions"):
            return shapes.chat_stream() if stream else shapes.chat_completion()
        if seen.path.endswith("/responses"):
            return shapes.responses_stream() if stream else shapes.responses_blocking()
        if seen.path.endswith("/messages"):
            if "tool_result" in json.dumps(doc["messages"][-1]["content"]):
                return json_reply(anthropic_message("Sunny.", shapes.ANTHROPIC_MODEL, (30, 7)))
            return shapes.anthropic_stream() if stream else shapes.anthropic_blocking()
        return super().default_reply(seen)


@dataclass(frozen=True)
class Member:
    name: str
    secret: str
    token_id: str
    principal_id: str


@dataclass(frozen=True)
class Expect:
    """What the record of one call must say."""

    member: str
    client: str
    outcome: str
    status: int
    provider: str
    route: str
    requested: str
    served: str
    tokens: tuple[int, int, int, int, int]
    streamed: bool
    tools: tuple[tuple[str, str], ...] = ()
    credential: str = "pooled"
    hint: str = ""
    attempts: int = 1


CHAT_TOOL = (("get_weather", "call_abc123"),)
RESPONSES_TOOL = (("shell", "call_shell_1"),)
ANTHROPIC_TOOL = (("get_weather", "toolu_01A09q90qw90lq917835lq9"),)
OAI = "openai-python"
ANT = "anthropic-python"
CHAT = "/v1/chat/completions"
MSGS = "/v1/messages"
EXPECTED = {
    "chat": Expect("alice", OAI, "completed", 200, "oai", CHAT, "gpt-x", shapes.CHAT_MODEL,
                   shapes.CHAT_TOKENS, False, CHAT_TOOL),
    "chat-stream": Expect("alice", OAI, "completed", 200, "oai", CHAT, "gpt-x",
                          shapes.CHAT_MODEL, shapes.CHAT_TOKENS, True, CHAT_TOOL),
    "responses": Expect("alice", OAI, "completed", 200, "oai", "/v1/responses", "codex-x",
                        shapes.RESPONSES_MODEL, shapes.RESPONSES_TOKENS, False, RESPONSES_TOOL),
    "responses-stream": Expect("alice", OAI, "completed", 200, "oai", "/v1/responses",
                               "codex-x", shapes.RESPONSES_MODEL, shapes.RESPONSES_TOKENS, True,
                               RESPONSES_TOOL),
    "messages": Expect("bob", ANT, "completed", 200, "claude", MSGS, "claude-x",
                       shapes.ANTHROPIC_MODEL, shapes.ANTHROPIC_TOKENS, False, ANTHROPIC_TOOL),
    "tool-result": Expect("bob", ANT, "completed", 200, "claude", MSGS, "claude-x",
                          shapes.ANTHROPIC_MODEL, TOOL_RESULT_TOKENS, False),
    "messages-stream": Expect("bob", ANT, "completed", 200, "claude", MSGS, "claude-x",
                              shapes.ANTHROPIC_MODEL, shapes.ANTHROPIC_TOKENS, True,
                              ANTHROPIC_TOOL),
    "bedrock": Expect("bob", ANT, "completed", 200, "aws", MSGS, BEDROCK_MODEL, "(bedrock)",
                      shapes.ANTHROPIC_TOKENS, False, ANTHROPIC_TOOL, hint="(bedrock)"),
    "bedrock-stream": Expect("bob", ANT, "completed", 200, "aws", MSGS, BEDROCK_MODEL,
                             "(bedrock)", shapes.ANTHROPIC_TOKENS, True, ANTHROPIC_TOOL,
                             hint="(bedrock)"),
    "byok": Expect("bob", OAI, "completed", 200, "oai", CHAT, "gpt-x", shapes.CHAT_MODEL,
                   shapes.CHAT_TOKENS, False, CHAT_TOOL, "byok", mask_secret(BYOK_KEY)),
    "byok-stream": Expect("bob", ANT, "completed", 200, "claude", MSGS, "claude-x",
                          shapes.ANTHROPIC_MODEL, shapes.ANTHROPIC_TOKENS, True, ANTHROPIC_TOOL,
                          "byok", mask_secret(BYOK_ANT_KEY)),
    "failover": Expect("alice", OAI, "completed", 200, "fo", CHAT, "gpt-x", shapes.CHAT_MODEL,
                       shapes.CHAT_TOKENS, False, CHAT_TOOL, hint=mask_secret(SPARE_KEY),
                       attempts=2),
    "pool-429": Expect("alice", OAI, "refused_pool", 429, "tight", CHAT, "gpt-x", "",
                       NO_TOKENS, False, attempts=1),
    "pool-429-again": Expect("alice", OAI, "refused_pool", 429, "tight", CHAT, "gpt-x", "",
                             NO_TOKENS, False, attempts=0),
    "upstream-500": Expect("alice", OAI, "upstream_error", 500, "oai", CHAT, BROKEN_MODEL, "",
                           NO_TOKENS, False),
    "disconnect": Expect("alice", "other", "cancelled", 200, "oai", CHAT, SLOW_MODEL,
                         shapes.CHAT_MODEL, NO_TOKENS, True, CHAT_TOOL),
    "disconnect-sdk": Expect("bob", ANT, "cancelled", 200, "claude", MSGS, SLOW_MODEL,
                             shapes.ANTHROPIC_MODEL, STARTED_TOKENS, True),
}  # fmt: skip


# --- the calls ------------------------------------------------------------------------


def request_id(raw: Any) -> str:
    return str(raw.headers["x-aibridge-request-id"])


def openai_calls(url: str, member: Member) -> dict[str, str]:
    """Chat completions and Responses, blocking and streamed, through the OpenAI SDK."""
    ids = {}
    with openai.OpenAI(base_url=f"{url}/oai/v1", api_key=member.secret, max_retries=0) as client:
        chat = client.chat.completions.with_raw_response
        raw: Any = chat.create(model="gpt-x", messages=MESSAGES)
        assert raw.parse().choices[0].message.tool_calls[0].id == "call_abc123"
        ids["chat"] = request_id(raw)
        raw = chat.create(
            model="gpt-x",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        assert [c.usage.prompt_tokens for c in raw.parse() if c.usage] == [shapes.CHAT_TOKENS[0]]
        ids["chat-stream"] = request_id(raw)
        responses = client.responses.with_raw_response
        raw = responses.create(model="codex-x", input="weather in Paris?")
        assert raw.parse().usage.input_tokens == shapes.RESPONSES_TOKENS[0]
        ids["responses"] = request_id(raw)
        raw = responses.create(model="codex-x", input="weather in Paris?", stream=True)
        assert [e.type for e in raw.parse()][-1] == "response.completed"
        ids["responses-stream"] = request_id(raw)
        with pytest.raises(openai.InternalServerError) as broken:
            chat.create(model=BROKEN_MODEL, messages=MESSAGES)
        ids["upstream-500"] = request_id(broken.value.response)
    return ids


def anthropic_calls(url: str, member: Member, provider: str, prefix: str) -> dict[str, str]:
    """Through the Anthropic SDK: a blocking message (a tool call), a stream, and (but on
    Bedrock) the tool's result sent back for the model's answer."""
    model = BEDROCK_MODEL if provider == "aws" else "claude-x"
    ids = {}
    with anthropic.Anthropic(
        base_url=f"{url}/{provider}", api_key=member.secret, max_retries=0
    ) as client:
        create = client.messages.with_raw_response.create
        raw: Any = create(model=model, max_tokens=100, messages=MESSAGES)
        asked = raw.parse()
        assert asked.stop_reason == "tool_use"
        ids[prefix] = request_id(raw)
        raw = create(model=model, max_tokens=100, messages=MESSAGES, stream=True)
        assert [e.type for e in raw.parse()][-1] == "message_stop"
        ids[f"{prefix}-stream"] = request_id(raw)
        if provider == "aws":
            return ids
        use = next(b for b in asked.content if b.type == "tool_use")
        history: Any = [
            *MESSAGES,
            {"role": "assistant", "content": [b.model_dump() for b in asked.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
            },
        ]
        raw = create(model=model, max_tokens=100, messages=history)
        assert raw.parse().content[0].text == "Sunny."
        ids["tool-result"] = request_id(raw)
    return ids


def key_calls(url: str, alice: Member, bob: Member) -> dict[str, str]:
    """BYOK (bob's own keys beside his gateway token, blocking through the OpenAI SDK and
    streamed through the Anthropic one), a failover, an exhausted pool twice."""
    ids = {}
    byok: Any = {"default_headers": {"X-AIBridge-Token": bob.secret}, "max_retries": 0}
    with openai.OpenAI(base_url=f"{url}/oai/v1", api_key=BYOK_KEY, **byok) as client:
        ids["byok"] = request_id(
            client.chat.completions.with_raw_response.create(model="gpt-x", messages=MESSAGES)
        )
    with anthropic.Anthropic(base_url=f"{url}/claude", api_key=BYOK_ANT_KEY, **byok) as own:
        raw: Any = own.messages.with_raw_response.create(
            model="claude-x", max_tokens=100, messages=MESSAGES, stream=True
        )
        assert [e.type for e in raw.parse()][-1] == "message_stop"
        ids["byok-stream"] = request_id(raw)
    with openai.OpenAI(base_url=f"{url}/fo/v1", api_key=alice.secret, max_retries=0) as client:
        ids["failover"] = request_id(
            client.chat.completions.with_raw_response.create(model="gpt-x", messages=MESSAGES)
        )
    with openai.OpenAI(base_url=f"{url}/tight/v1", api_key=alice.secret, max_retries=0) as client:
        for name in ("pool-429", "pool-429-again"):
            with pytest.raises(openai.RateLimitError) as refused:
                client.chat.completions.create(model="gpt-x", messages=MESSAGES)
            ids[name] = request_id(refused.value.response)
    return ids


def disconnect(url: str, alice: Member, bob: Member) -> dict[str, str]:
    """Streams the client closes after their first chunk (httpx) or event (Anthropic SDK)."""
    body = {"model": SLOW_MODEL, "messages": MESSAGES, "stream": True}
    headers = {"authorization": f"Bearer {alice.secret}"}
    with (
        httpx.Client(base_url=url, headers=headers, timeout=10) as http,
        http.stream("POST", "/oai/v1/chat/completions", json=body) as answer,
    ):
        next(answer.iter_raw())
        ids = {"disconnect": answer.headers["x-aibridge-request-id"]}
    with anthropic.Anthropic(base_url=f"{url}/claude", api_key=bob.secret, max_retries=0) as client:
        raw: Any = client.messages.with_raw_response.create(
            model=SLOW_MODEL, max_tokens=100, messages=MESSAGES, stream=True
        )
        stream = raw.parse()
        assert next(iter(stream)).type == "message_start"
        stream.close()
        ids["disconnect-sdk"] = request_id(raw)
    return ids


# --- the stack, the traffic and what the CLI says about it ------------------------------


@dataclass
class Matrix:
    target: str
    members: dict[str, Member]
    auditor: str
    ids: dict[str, str] = field(default_factory=dict)
    bedrock_model_ids: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)  # by the fake upstream

    def cli(self, *args: str, token: str = "") -> Any:
        """`aibridge usage <args> --json` as a subprocess: its parsed output."""
        env = {"AIBRIDGE_CONFIG_SERVICE": self.target, "AIBRIDGE_TOKEN": token or self.auditor}
        result = run("usage", *args, "--json", env=env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def stored(self) -> set[str]:
        with grpc.insecure_channel(self.target) as channel:
            page = pb_grpc.UsageServiceStub(channel).ListInterceptions(
                pb.ListInterceptionsRequest(page_size=1000), metadata=ADMIN_MD
            )
        return {r.id for r in page.interceptions}


def create_token(target: str, name: str, role: token_pb2.Role.ValueType) -> Member:
    with grpc.insecure_channel(target) as channel:
        made = ta_grpc.TokenAdminServiceStub(channel).CreateToken(
            ta.CreateTokenRequest(principal_name=name, role=role), metadata=ADMIN_MD
        )
    return Member(name, made.secret, made.token.id, made.token.principal_id)


def provider_env(base: str) -> dict[str, str]:
    providers = [
        ("openai", "oai", {"BASE_URL": f"{base}/v1/", "KEY": POOL_KEY}),
        ("openai", "fo", {"BASE_URL": f"{base}/v1/", "KEYS": f"{FAILING_KEY},{SPARE_KEY}"}),
        ("openai", "tight", {"BASE_URL": f"{base}/v1/", "KEY": TIGHT_KEY}),
        ("anthropic", "claude", {"BASE_URL": f"{base}/", "KEY": ANT_KEY}),
        (
            "bedrock",
            "aws",
            {
                "BEDROCK_BASE_URL": base,
                "BEDROCK_REGION": REGION,
                "BEDROCK_ACCESS_KEY": ACCESS_KEY,
                "BEDROCK_ACCESS_KEY_SECRET": SECRET_KEY,
            },
        ),
    ]
    env = {"AIBRIDGE_ENCRYPTION_KEYS": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}
    for n, (kind, name, fields) in enumerate(providers):
        env |= {f"AIBRIDGE_PROVIDER_{n}_TYPE": kind, f"AIBRIDGE_PROVIDER_{n}_NAME": name}
        env |= {f"AIBRIDGE_PROVIDER_{n}_{k}": v for k, v in fields.items()}
    return env


def drive(matrix: Matrix, url: str) -> None:
    """Every call of the matrix, keeping the request id of each answer in `matrix.ids`."""
    alice, bob = matrix.members["alice"], matrix.members["bob"]
    matrix.ids |= openai_calls(url, alice)
    matrix.ids |= anthropic_calls(url, bob, "claude", "messages")
    matrix.ids |= anthropic_calls(url, bob, "aws", "bedrock")
    matrix.ids |= key_calls(url, alice, bob)
    matrix.ids |= disconnect(url, alice, bob)
    assert set(matrix.ids) == set(EXPECTED)


def start_stack(procs: Procs, database_url: str, upstream: str) -> Matrix:
    service = procs.config_service(database_url, **provider_env(upstream))
    members = {
        name: create_token(service.target, name, token_pb2.ROLE_MEMBER) for name in ("alice", "bob")
    }
    auditor = create_token(service.target, "audit", token_pb2.ROLE_AUDITOR).secret
    return Matrix(service.target, members, auditor)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def matrix(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Matrix]:
    """The stack, after the whole matrix of calls went through it and every record is stored."""
    tmp = tmp_path_factory.mktemp(f"usage-{request.param}")
    with fresh_database(request.param, request.config, tmp) as database_url:
        fake = MatrixUpstream()
        server = ThreadedUpstream(fake).start()
        procs = Procs(tmp)
        try:
            made = start_stack(procs, database_url, fake.url)
            bridge = procs.bridge(made.target, node_id="usage-bridge")
            url = str(bridge.ready["url"]).rstrip("/")
            wait_ready(url)
            drive(made, url)
            assert not fake.bedrock.rejected  # every Bedrock call correctly SigV4-signed
            made.bedrock_model_ids = [r.model_id for r in fake.bedrock.received]
            made.seen = fake.seen
            asyncio.run(eventually(lambda: set(made.ids.values()) <= made.stored(), 20, 0.2))
            yield made
        finally:
            procs.close()
            server.stop()


# --- what the CLI says ------------------------------------------------------------------


def tokens_of(record: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(record["usage"][kind]) for kind in TOKEN_KINDS)


@pytest.fixture(scope="module")
def listed(matrix: Matrix) -> dict[str, dict[str, Any]]:
    """`aibridge usage list --json` (auditor), by record id."""
    return {r["id"]: r for r in matrix.cli("list", "--limit", "1000")}


PROVIDER_TYPES = {"oai": "openai", "fo": "openai", "tight": "openai", "claude": "anthropic"}
PROVIDER_TYPES["aws"] = "bedrock"


def expected_fields(matrix: Matrix, expect: Expect) -> dict[str, Any]:
    member = matrix.members[expect.member]
    served, hint = expect.served, expect.hint
    if expect.provider == "aws":
        served = matrix.bedrock_model_ids[0 if not expect.streamed else 1]
        hint = mask_secret(ACCESS_KEY)
    elif expect.credential == "pooled" and expect.attempts and expect.outcome != "refused_pool":
        hint = hint or mask_secret(ANT_KEY if expect.provider == "claude" else POOL_KEY)
    return {
        "principal_id": member.principal_id,
        "principal_name": member.name,
        "token_id": member.token_id,
        "client": expect.client,
        "outcome": expect.outcome,
        "status_code": expect.status,
        "provider_name": expect.provider,
        "provider_type": PROVIDER_TYPES[expect.provider],
        "route": expect.route,
        "requested_model": expect.requested,
        "served_model": served,
        "credential_kind": expect.credential,
        "credential_hint": hint,
        "attempts": expect.attempts,
        "streamed": expect.streamed,
        "tool_call_count": len(expect.tools),
        "proxied": False,
    }


@pytest.mark.parametrize("case", EXPECTED)
def test_each_call_is_listed_with_who_what_how_it_ended_and_its_tokens(
    matrix: Matrix, listed: dict[str, dict[str, Any]], case: str
) -> None:
    """`usage list --json` has the call under its request id with the right principal, client, outcome, provider, route, models, credential, attempts and token counts."""
    record = listed[matrix.ids[case]]
    expected = expected_fields(matrix, EXPECTED[case])
    assert {k: record[k] for k in expected} == expected
    assert tokens_of(record) == EXPECTED[case].tokens


def test_show_gives_each_call_its_tool_calls(matrix: Matrix) -> None:
    """`usage show ID --json` has the name and call id of every tool call the model made, no arguments (prompt recording is off) and no prompt."""
    with ThreadPoolExecutor(4) as pool:
        records = pool.map(lambda c: matrix.cli("show", matrix.ids[c]), EXPECTED)
        shown = dict(zip(EXPECTED, records, strict=True))
    for case, record in shown.items():
        calls = [(t["name"], t["call_id"], t["arguments"]) for t in record["tool_calls"]]
        assert calls == [(*tool, "") for tool in EXPECTED[case].tools], case
        assert record["prompt"] == "", case
        assert tokens_of(record) == EXPECTED[case].tokens, case


SUMMED = ("requests", "failures", "cancelled", *TOKEN_KINDS)


def sums(records: list[dict[str, Any]]) -> dict[str, int]:
    total = dict.fromkeys(SUMMED, 0)
    for r in records:
        total["requests"] += 1
        total["failures"] += r["outcome"] not in ("completed", "cancelled")
        total["cancelled"] += r["outcome"] == "cancelled"
        for kind in TOKEN_KINDS:
            total[kind] += int(r["usage"][kind])
    return total


KEYS: dict[str, Callable[[dict[str, Any]], tuple[str, ...]]] = {
    "user,model": lambda r: (r["principal_id"], r["requested_model"]),
    "provider,client": lambda r: (r["provider_name"], r["client"]),
    "day": lambda r: (r["started_at"][:10],),
}
GROUP_FIELDS = {
    "user,model": ("principal_id", "model"),
    "provider,client": ("provider_name", "client"),
    "day": ("period_start",),
}


@pytest.mark.parametrize("by", KEYS)
def test_the_summary_adds_up_to_the_listed_records(
    matrix: Matrix, listed: dict[str, dict[str, Any]], by: str
) -> None:
    """`usage summary --by ... --json`: each group and the total equal the sums over the listed records of that group."""
    summary = matrix.cli("summary", "--by", by)
    records = list(listed.values())
    assert summary["total"] == sums(records)
    expected: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in records:
        expected.setdefault(KEYS[by](r), []).append(r)
    got = {
        tuple(str(g.get(f, ""))[: 10 if f == "period_start" else None] for f in GROUP_FIELDS[by]): g
        for g in summary["groups"]
    }
    assert set(got) == set(expected)
    for key, group in got.items():
        assert group["counts"] == sums(expected[key]), key


@pytest.mark.parametrize("name", ["alice", "bob"])
def test_a_member_lists_only_its_own_records(
    matrix: Matrix, listed: dict[str, dict[str, Any]], name: str
) -> None:
    """`usage list` with a member's token shows exactly that member's calls."""
    member = matrix.members[name]
    own = matrix.cli("list", "--limit", "1000", token=member.secret)
    made = {matrix.ids[c] for c, e in EXPECTED.items() if e.member == name}
    assert {r["id"] for r in own} == made
    assert {r["id"] for r in listed.values() if r["principal_id"] == member.principal_id} == made


def test_byok_calls_reach_the_upstream_with_the_users_own_keys_and_no_gateway_token(
    matrix: Matrix,
) -> None:
    """The upstream saw each BYOK key once and never a gateway token."""
    sent = [" ".join(seen.headers.values()) for seen in matrix.seen]
    for key in (BYOK_KEY, BYOK_ANT_KEY):
        assert sum(key in headers for headers in sent) == 1
    secrets = [m.secret for m in matrix.members.values()]
    assert not any(secret in headers for secret in secrets for headers in sent)
