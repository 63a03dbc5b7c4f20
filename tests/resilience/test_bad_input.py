"""Bad input: generated seed environments applied end to end, and a real bridge's HTTP
surface under malformed, hostile and oversized requests.

(The admin gRPC API is fuzzed in tests/config_service/test_admin_fuzz.py.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from posixpath import normpath
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from aibridge.config.v1 import provider_pb2 as pb
from aibridge.rulebook import MAX_KEYS, MAX_NAME_LENGTH, ProviderSpec
from config_service.crypto import Cipher
from config_service.db import migrate
from config_service.db.engine import make_engine
from config_service.db.models import Provider, ProviderKey
from config_service.seed.apply import SeedConflict, apply
from config_service.seed.env import SeedConfigError, parse_env
from config_service.store.database import Database
from config_service.store.records import load_record
from tests.fixtures.upstream import FakeUpstream
from tests.fixtures.waits import eventually
from tests.resilience.harness import (
    NAME_RE,
    Admin,
    Proc,
    Procs,
    bridge_ready,
    bridge_url,
    dumps_written,
    walk_files,
)

# ------------------------------------------------------------------ seeding, end to end

ENCRYPTION_KEY = bytes(range(32))
FIELDS = [
    "TYPE",
    "NAME",
    "DISPLAY_NAME",
    "KEY",
    "KEYS",
    "BASE_URL",
    "BEDROCK_REGION",
    "BEDROCK_BASE_URL",
    "BEDROCK_ACCESS_KEY",
    "BEDROCK_ACCESS_KEY_SECRET",
    "BEDROCK_ACCESS_KEYS",
    "BEDROCK_MODEL",
    "BEDROCK_SMALL_FAST_MODEL",
    "BEDROCK_ROLE_ARN",
    "Name",
    "TYPO",
]
LEGACY = [
    "OPENAI_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_KEY",
    "ANTHROPIC_BASE_URL",
    "BEDROCK_REGION",
    "BEDROCK_BASE_URL",
    "BEDROCK_ACCESS_KEY",
    "BEDROCK_ACCESS_KEY_SECRET",
    "BEDROCK_MODEL",
]
TYPES = ["openai", "anthropic", "bedrock", "azure", "google", "openai-compat", "openrouter"]
TYPES += ["vercel", "copilot", "OpenAI", "", "mystery"]
URLS = [
    "https://api.example.com/v1/",
    "http://127.0.0.1:9/",
    "https://bedrock-runtime.us-east-1.amazonaws.com",
    "ftp://x",
    "not a url",
    "https://",
    "https://h/\x00",
    "",
]
KEYISH = st.one_of(
    st.sampled_from(["sk-a", "sk-a,sk-b", "sk-a,sk-a", ",", " sk-pad ", "k1,k2,k3,k4,k5,k6"]),
    st.text(min_size=0, max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
)
VALUES = st.one_of(
    st.sampled_from(TYPES),
    st.sampled_from(URLS),
    st.sampled_from(["team-a", "Team_A", "a" * 70, "ok-1", "-bad", "us-east-1", "not a region"]),
    KEYISH,
)


SECRET_ALPHABET = st.characters(min_codepoint=33, max_codepoint=0x2FFF, exclude_characters=",")
GOOD_KEYS = st.lists(st.text(SECRET_ALPHABET, min_size=8, max_size=40), max_size=5, unique=True)


@st.composite
def plausible_provider(draw: st.DrawFn, prefix: str, index: int) -> dict[str, str]:
    """An indexed provider that is mostly valid, with one field sometimes off."""
    ptype = draw(st.sampled_from(TYPES[:9]))
    p = f"{prefix}PROVIDER_{index}_"
    env = {p + "TYPE": ptype}
    if draw(st.booleans()):
        env[p + "NAME"] = draw(
            st.from_regex(r"[a-z0-9]{1,12}(-[a-z0-9]{1,6}){0,2}", fullmatch=True)
        )
    if ptype == "bedrock" or (ptype == "anthropic" and draw(st.booleans())):
        env[p + "BEDROCK_REGION"] = draw(st.sampled_from(["us-east-1", "eu-west-3"]))
        if draw(st.booleans()):
            env[p + "BEDROCK_ACCESS_KEY"] = "AKIA" + draw(
                st.text("ABCDEFGHIJ0123456789", min_size=16, max_size=16)
            )
            env[p + "BEDROCK_ACCESS_KEY_SECRET"] = draw(
                st.text(SECRET_ALPHABET, min_size=20, max_size=40)
            )
    elif ptype != "copilot":
        keys = draw(GOOD_KEYS)
        if keys:
            env[p + "KEYS"] = ",".join(keys)
    needs_url = ptype in ("azure", "google", "openai-compat", "openrouter", "vercel")
    bedrock_backed = ptype == "bedrock" or p + "BEDROCK_REGION" in env
    if (needs_url or draw(st.booleans())) and not bedrock_backed:
        env[p + "BASE_URL"] = draw(st.sampled_from(URLS[:2]))
    if draw(st.integers(0, 4)) == 0:  # one field off
        env[p + draw(st.sampled_from(FIELDS))] = draw(VALUES)
    return env


@st.composite
def seed_envs(draw: st.DrawFn) -> dict[str, str]:
    prefix = draw(
        st.sampled_from(["AIBRIDGE_", "AIBRIDGE_", "CODER_AI_GATEWAY_", "CODER_AIBRIDGE_"])
    )
    env: dict[str, str] = {}
    if draw(st.booleans()):
        for index in range(draw(st.integers(1, 4))):
            env.update(draw(plausible_provider(prefix, index)))
        if draw(st.booleans()):
            env[prefix + draw(st.sampled_from(["OPENAI_KEY", "ANTHROPIC_KEY"]))] = (
                ",".join(draw(GOOD_KEYS)) or "k"
            )
        return env
    for name in draw(st.lists(st.sampled_from(LEGACY), max_size=3, unique=True)):
        env[prefix + name] = draw(VALUES)
    indexes = draw(
        st.lists(
            st.sampled_from(["0", "1", "2", "3", "01", "99999999999999999999"]),
            max_size=4,
            unique=True,
        )
    )
    for index in indexes:
        env[f"{prefix}PROVIDER_{index}_TYPE"] = draw(st.sampled_from(TYPES))
        for field in draw(st.lists(st.sampled_from(FIELDS), max_size=5, unique=True)):
            env[f"{prefix}PROVIDER_{index}_{field}"] = draw(VALUES)
    if draw(st.booleans()):  # a foreign prefix mixed in, or unrelated settings
        other = draw(st.sampled_from(["CODER_AIBRIDGE_OPENAI_KEY", "AIBRIDGE_LOG_LEVEL", "PATH"]))
        env[other] = draw(VALUES)
    return env


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seed-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


def check_seeded(db: Database, env: dict[str, str], created: tuple[str, ...]) -> None:
    """The database invariants after a seed: names, uniqueness, key limits, pool order, audit."""
    plan = {p.name: p for p in parse_env(env).providers}
    with db.read() as session:
        _check_provider_rows(db, session, plan, created)
        audit = session.execute(text("SELECT after FROM audit_log")).scalars().all()
        assert len(audit) == len(created)
        _check_no_key_in_audit(audit, env, plan)


def _check_provider_rows(
    db: Database, session: Session, plan: dict[str, ProviderSpec], created: tuple[str, ...]
) -> None:
    """The live providers are `created`, each name valid and unique, each pool within the key
    limit, decrypting to the seed's keys in order, none in plaintext."""
    rows = session.execute(select(Provider)).scalars().all()
    live = [r.name for r in rows if not r.deleted]
    assert sorted(live) == sorted(created)
    assert len(set(live)) == len(live)
    for row in rows:
        assert NAME_RE.match(row.name) and len(row.name) <= MAX_NAME_LENGTH
        keys = (
            session.execute(
                select(ProviderKey)
                .where(ProviderKey.provider_id == row.id)
                .order_by(ProviderKey.created_at, ProviderKey.id)
            )
            .scalars()
            .all()
        )
        assert len(keys) <= MAX_KEYS
        record = load_record(row, list(keys), db.cipher)
        assert not record.problems, record.problems
        assert [k.secret for k in record.keys] == list(plan[row.name].keys)
        for key, stored in zip(plan[row.name].keys, keys, strict=True):
            if len(key) >= 8:  # encrypted at rest: no plaintext in the row
                assert key not in stored.secret


def _check_no_key_in_audit(
    audit: Sequence[str | None], env: dict[str, str], plan: dict[str, ProviderSpec]
) -> None:
    """No key is among the audit log's values, unless the same text is a public value."""
    values: list[tuple[str, str]] = []
    for entry in audit:
        _strings(json.loads(entry or "null"), "", values)
    public = [v for k, v in env.items() if not k.upper().endswith(("KEY", "KEYS"))]
    public += [v for k, v in values if not any(w in k for w in ("key", "secret", "hint"))]
    for seed in plan.values():
        for key in seed.keys:
            if len(key) >= 8 and not any(key in v for v in public):
                assert not any(key in v for _, v in values), key


# Each example seeds a database: no deadline, and the fixture is shared by the examples.
SEED_ENV_RUNS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _strings(doc: object, field: str, out: list[tuple[str, str]]) -> None:
    """Every string value of a JSON document with the (lower-case) name of its field."""
    if isinstance(doc, str):
        out.append((field.lower(), doc))
    elif isinstance(doc, dict):
        for name, value in doc.items():
            _strings(value, str(name), out)
    elif isinstance(doc, list):
        for value in doc:
            _strings(value, field, out)


@settings(SEED_ENV_RUNS, max_examples=200)
@given(env=seed_envs())
def test_generated_seed_envs_apply_cleanly(template_db: Path, env: dict[str, str]) -> None:
    """Any generated environment either fails with SeedConfigError listing problems, or seeds a fresh database consistently and idempotently; no other exception."""
    try:
        plan = parse_env(env)
    except SeedConfigError as exc:
        problems = str(exc)
        assert problems  # every problem is listed
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seed.db"
        shutil.copy(template_db, path)
        db = Database(make_engine(f"sqlite:///{path}"), Cipher((ENCRYPTION_KEY,)))
        try:
            before = db.revision()
            try:
                outcome = apply(db, plan)
            except SeedConflict:  # impossible on an empty database
                pytest.fail("SeedConflict on a fresh database")
            after = db.revision()
            assert after == before + (1 if outcome.created else 0)
            check_seeded(db, env, outcome.created)
            again = apply(db, parse_env(env))  # a restart: a no-op
            assert again.created == () and sorted(again.unchanged) == sorted(outcome.created)
            assert db.revision() == after
        finally:
            db.engine.dispose()


@pytest.mark.slow
@settings(SEED_ENV_RUNS, max_examples=3000)
@given(env=seed_envs())
def test_generated_seed_envs_apply_cleanly_long(template_db: Path, env: dict[str, str]) -> None:
    """The long run of test_generated_seed_envs_apply_cleanly."""
    test_generated_seed_envs_apply_cleanly.hypothesis.inner_test(template_db, env)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- bridge HTTP surface

KEY = "sk-fuzz-pool-key-0000000000000000000"
# Documented answers for client mistakes; 502/504 only come from the upstream side.
ALLOWED = {200, 400, 401, 403, 404, 405, 413, 414, 431, 502, 503, 504}


@dataclass
class FuzzStack:
    bridge: Proc
    member: str
    dumps: Path
    root: Path
    upstream: FakeUpstream

    @property
    def port(self) -> int:
        return int(bridge_url(self.bridge).rsplit(":", 1)[1])


@pytest.fixture
async def fuzz_stack(
    procs: Procs, upstream: FakeUpstream, sqlite_url: str, tmp_path: Path
) -> FuzzStack:
    service = await asyncio.to_thread(procs.config_service, sqlite_url)
    admin = Admin(service.ready["target"])
    try:
        await admin.create_provider("fz", pb.PROVIDER_TYPE_OPENAI, f"{upstream.url}/v1/", [KEY])
        await admin.create_provider("an", pb.PROVIDER_TYPE_ANTHROPIC, f"{upstream.url}/", [KEY])
        await admin.create_provider(
            "off", pb.PROVIDER_TYPE_OPENAI, f"{upstream.url}/v1/", [KEY], disabled=True
        )
        member = await admin.create_token("alice")
        version = str(await admin.version())
    finally:
        await admin.close()
    dumps = tmp_path / "dumps"
    bridge = await asyncio.to_thread(
        procs.bridge, service.ready["target"], "bridge-fuzz", AIBRIDGE_DUMP_DIR=str(dumps)
    )

    await bridge_ready(bridge, version)
    return FuzzStack(bridge, member, dumps, tmp_path, upstream)


def raw_request(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes; return the raw answer (until the server closes or goes quiet)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int | None:
    """The status of the first response; None when the server just closed."""
    if not answer:
        return None
    line = answer.split(b"\r\n", 1)[0].split(b" ")
    assert line[0] == b"HTTP/1.1", answer[:200]
    return int(line[1])


SEGMENTS = st.sampled_from(
    [
        "fz", "an", "off", "v1", "chat", "completions", "messages", "models", "responses",
        "..", ".", "%2e%2e", "%2E%2E", "%2f", "%2F..%2F", "", "\\..\\", "%00", "%ff",
        "conversations", "count_tokens", "healthz", "metrics", "é", "%C3%A9", "a" * 300,
    ]
)  # fmt: skip
PATHS = st.one_of(
    st.lists(SEGMENTS, min_size=1, max_size=8).map(lambda s: "/" + "/".join(s)),
    st.sampled_from(
        [
            "/fz/v1/models/../../../etc/passwd",
            "/fz/v1/models/%2e%2e/%2e%2e/admin",
            "//fz/v1/chat/completions",
            "/fz//v1/chat/completions",
            "/../fz/v1/chat/completions",
            "/fz/v1/chat/completions?x=../../",
            "*",
            "http://evil.example/fz/v1/models",
        ]
    ),
)
HEADER_VALUES = st.one_of(
    st.sampled_from(
        [
            b"a\r\nX-Injected: 1",
            b"a\nX-Injected: 1",
            b"Bearer \xff\xfe",
            b"\x00",
            b"x" * 9000,
            b"application/json",
            b"chunked",
            b"-1",
            b"99999999999999999999",
            b"../../../../tmp/x",
        ]
    ),
    st.binary(max_size=40),
)
HEADER_NAMES = st.sampled_from(
    [
        b"authorization", b"x-api-key", b"x-aibridge-token", b"content-type",
        b"content-length", b"transfer-encoding", b"host", b"x-foo", b"bad name", b"",
    ]
)  # fmt: skip
BODIES = st.one_of(
    st.sampled_from(
        [
            b"",
            b"{",
            b'{"model": "../../../../etc", "stream": true, "messages": []}',
            b'{"model": "a/../../..", "messages": []}',
            b'{"model": "\\u0000\\ud800", "messages": []}',
            b'{"model": 5, "stream": "yes"}',
            b"\xff\xfe\xfd",
            b"[" * 5000,
            json.dumps(
                {"model": "gpt", "messages": [{"role": "user", "content": "x" * 10000}]}
            ).encode(),
        ]
    ),
    st.binary(max_size=200),
)


@dataclass
class Built:
    data: bytes
    valid_auth: bool


SERVED = st.sampled_from(
    [
        "/fz/v1/chat/completions", "/fz/v1/responses", "/fz/v1/models", "/fz/v1/models/gpt-x",
        "/fz/v1/conversations/c1/items", "/an/v1/messages", "/an/v1/messages/count_tokens",
        "/an/v1/models", "/off/v1/chat/completions",
    ]
)  # fmt: skip
HOSTILE_MODELS = st.sampled_from(
    ["../../../../tmp/escape", "..", "/etc/passwd", "a\\..\\..\\b", "\u0000", "%2e%2e", "x" * 500]
)


@st.composite
def requests(draw: st.DrawFn, token: str) -> Built:
    plausible = draw(st.booleans())
    if plausible:  # a served route with valid auth, and one or two hostile parts
        method = draw(st.sampled_from([b"POST", b"GET"]))
        path = draw(SERVED)
        if draw(st.booleans()):
            path += draw(st.sampled_from(["/..", "/%2e%2e/x", "//", "/./", "?q=%00", "%00"]))
        body = json.dumps(
            {"model": draw(HOSTILE_MODELS), "stream": draw(st.booleans()), "messages": []}
        ).encode()
        if draw(st.integers(0, 3)) == 0:
            body = draw(BODIES)
        headers: list[tuple[bytes, bytes]] = [
            (b"host", b"bridge"),
            draw(
                st.sampled_from(
                    [
                        (b"authorization", b"Bearer " + token.encode()),
                        (b"x-api-key", token.encode()),
                    ]
                )
            ),
        ]
        if draw(st.booleans()):
            headers.append((draw(HEADER_NAMES), draw(HEADER_VALUES)))
        valid_auth = True
    else:
        method = draw(
            st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"BREW", b"P\xffST"])
        )
        path = draw(PATHS)
        headers = [(b"host", b"bridge")]
        valid_auth = draw(st.booleans())
        if valid_auth:
            headers.append((b"authorization", b"Bearer " + token.encode()))
        for _ in range(draw(st.integers(0, 3))):
            headers.append((draw(HEADER_NAMES), draw(HEADER_VALUES)))
        body = draw(BODIES)
    if not any(k in (b"content-length", b"transfer-encoding") for k, _ in headers):
        headers.append((b"content-length", str(len(body)).encode()))
    head = method + b" " + path.encode("utf-8", "surrogateescape") + b" HTTP/1.1\r\n"
    head += b"".join(k + b": " + v + b"\r\n" for k, v in headers)
    return Built(head + b"connection: close\r\n\r\n" + body, valid_auth)


def assert_no_escape(stack: FuzzStack) -> None:
    """Dump files exist only inside AIBRIDGE_DUMP_DIR, one directory per provider."""
    for path in walk_files(stack.root):
        if path.name.endswith((".req.txt", ".resp.txt")):
            assert path.resolve().is_relative_to(stack.dumps.resolve()), path
            relative = path.resolve().relative_to(stack.dumps.resolve())
            assert relative.parts[0] in {"fz", "an"} and len(relative.parts) == 3, relative


def assert_bridge_healthy(stack: FuzzStack) -> None:
    assert stack.bridge.popen.poll() is None
    statuses = [r.get("status") for r in stack.bridge.events("request")]
    assert 500 not in statuses
    crashes = [
        r
        for r in stack.bridge.records()
        if r.get("level") in ("error", "critical") or "Traceback" in json.dumps(r)
    ]
    assert not crashes, crashes[:3]
    asgi = [i for i, line in enumerate(stack.bridge.lines) if "Exception in ASGI" in line]
    assert not asgi, "".join(stack.bridge.lines[asgi[0] : asgi[0] + 60])


async def test_bridge_http_fuzz(fuzz_stack: FuzzStack) -> None:
    """Generated malformed requests (odd paths and traversal, CR/LF and non-UTF-8 headers, bad and huge JSON) get only documented answers, never a 500, and no dump lands outside AIBRIDGE_DUMP_DIR."""
    stack = fuzz_stack
    seen: dict[int | None, int] = {}

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
    @given(built=requests(stack.member))
    def run(built: Built) -> None:
        answer = raw_request(stack.port, built.data)
        status = status_of(answer)
        seen[status] = seen.get(status, 0) + 1
        assert status is None or status in ALLOWED, (status, built.data[:300], answer[:300])
        if status is not None and status != 200:
            assert b"Traceback" not in answer and b"Internal Server Error" not in answer
        for secret in (KEY.encode(),):
            assert secret not in answer

    await asyncio.to_thread(run)
    assert seen.get(200, 0) + seen.get(404, 0) + seen.get(401, 0) > 20, seen
    assert_no_escape(stack)
    assert_bridge_healthy(stack)


async def test_traversal_never_leaves_the_route(fuzz_stack: FuzzStack) -> None:
    """Dot segments (plain, percent-encoded, via encoded slashes) cannot take a request outside the provider's served routes: the bridge refuses it or the upstream still sees a served route."""
    stack = fuzz_stack
    auth = f"authorization: Bearer {stack.member}\r\n".encode()
    paths = [
        "/fz/v1/models/../files",
        "/fz/v1/models/%2e%2e/files",
        "/fz/v1/models/%2E%2E/%2E%2E/admin",
        "/fz/v1/models%2F..%2F..%2Fadmin",
        "/fz/v1/conversations/../../../../etc",
        "/fz/v1/models/./../fine_tuning/jobs",
        "/an/v1/models/../organizations/x",
        "/an/v1/messages/count_tokens/../../files",
    ]
    outcomes = {}
    for path in paths:
        before = len(stack.upstream.seen)
        answer = await asyncio.to_thread(
            raw_request,
            stack.port,
            f"GET {path} HTTP/1.1\r\nhost: b\r\nconnection: close\r\n".encode() + auth + b"\r\n",
        )
        status = status_of(answer)
        reached = [s.path for s in stack.upstream.seen[before:]]
        outcomes[path] = (status, reached)
    escaped = {}
    for path, (status, reached) in outcomes.items():
        assert status in ALLOWED, (path, status)
        for upstream_path in reached:
            resolved = normpath(unquote(upstream_path.split("?")[0]))
            served = resolved.startswith(("/v1/models", "/v1/conversations", "/v1/messages"))
            if not served:
                escaped[path] = resolved
    assert not escaped, f"requests left the served routes: {escaped}"
    assert_no_escape(stack)


async def test_pathological_but_small_requests(fuzz_stack: FuzzStack) -> None:
    """Deeply nested JSON on an intercepted route and a %00 in the path are answered (forwarded, or 400), never a 500, and dumping them does not fail."""
    stack = fuzz_stack
    auth = f"authorization: Bearer {stack.member}\r\n".encode()
    cases = {
        "/fz/v1/chat/completions": b"[" * 100_000,
        "/an/v1/messages": b'{"a":' * 50_000,
        "/fz/v1/models/x%00": b"",
        "/fz/v1/models/" + "a" * 70_000: b"",
    }
    statuses = {}
    for path, body in cases.items():
        answer = await asyncio.to_thread(
            raw_request,
            stack.port,
            f"POST {path} HTTP/1.1\r\nhost: b\r\nconnection: close\r\n".encode()
            + auth
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body,
        )
        statuses[path[:40]] = status_of(answer)
    assert all(s in ALLOWED for s in statuses.values()), statuses
    assert statuses["/fz/v1/models/x%00"] == 400
    # Each request the upstream saw is dumped after its response has been sent.
    await eventually(lambda: dumps_written(stack.bridge, stack.dumps, len(stack.upstream.seen)))
    assert_bridge_healthy(stack)
    assert_no_escape(stack)


async def test_oversized_bodies_are_413(fuzz_stack: FuzzStack) -> None:
    """A body over 32 MiB is refused with 413, declared (Content-Length) or streamed (chunked), and never reaches the upstream."""
    stack = fuzz_stack
    auth = f"authorization: Bearer {stack.member}\r\n".encode()
    before = len(stack.upstream.seen)
    declared = await asyncio.to_thread(
        raw_request,
        stack.port,
        b"POST /fz/v1/chat/completions HTTP/1.1\r\nhost: b\r\nconnection: close\r\n"
        + auth
        + b"content-length: 40000000\r\n\r\n{",
    )
    assert status_of(declared) == 413
    big = b"x" * (33 * 1024 * 1024)
    async with httpx.AsyncClient(timeout=60) as http:

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 1 << 20):
                yield big[i : i + (1 << 20)]

        try:
            answer = await http.post(
                bridge_url(stack.bridge) + "/fz/v1/chat/completions",
                content=chunks(),
                headers={"authorization": f"Bearer {stack.member}"},
            )
            status: int | None = answer.status_code
        except httpx.HTTPError:
            status = None  # the bridge may answer 413 and close before the upload ends
    assert status in (413, None)
    assert len(stack.upstream.seen) == before
    assert_bridge_healthy(stack)


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()
