"""Property test: generated admin requests against a real in-process config service.

The service runs on its own event loop in a background thread; hypothesis drives it
through a synchronous gRPC channel, so every example is plain blocking code. Each
example is a short sequence of Create/Update/Delete/Get requests mixing valid and
invalid input. Properties: only OK, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS or
FAILED_PRECONDITION ever come back (never INTERNAL/UNKNOWN), no response carries a
plaintext secret, and the database keeps its invariants: at most 5 keys per provider,
unique live names matching the name pattern, the revision equal to the initial one
plus the number of successful writes, and one audit row per successful write.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from aibridge.config.v1 import provider_admin_service_pb2 as pb
from aibridge.config.v1 import provider_admin_service_pb2_grpc as pb_grpc
from aibridge.rulebook import MAX_KEYS, MAX_NAME_LENGTH, NAME_RE, TYPES
from config_service.db.models import AuditEntry, Provider, ProviderKey
from config_service.rbac import SYSTEM, Role
from config_service.server import RunningService, start
from config_service.settings import ConfigServiceSettings
from config_service.store import tokens
from config_service.store.provider_input import UPDATE_PATHS
from tests.fixtures.services import ADMIN_TOKEN, base_env

ALLOWED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
}
OWNER_MD = (("authorization", f"Bearer {ADMIN_TOKEN}"),)

POOL = tuple(
    f"sk-fuzz-{word}-0123456789abcdef"
    for word in ("amber", "basil", "cedar", "dune", "ember", "fjord", "gale")
)
AWS_KEY = "AKIAFUZZEXAMPLE12345"
AWS_SECRET = "aws-fuzz-SECRET-0123456789abcdefghij"
LEAK_CHECKED = (*POOL, AWS_SECRET)
ENCRYPTION_KEY = base64.b64encode(bytes(range(32))).decode()

# ----------------------------------------------------------------------------- strategies

known_names = st.sampled_from(["alpha", "beta", "gamma-1", "d", "openai", "x-y-z"])
names = st.one_of(
    known_names,
    known_names,
    st.from_regex(NAME_RE, fullmatch=True).filter(lambda n: len(n) <= 70),
    st.text(max_size=70),
)
types = st.integers(min_value=0, max_value=10)  # 0 unspecified, 10 unknown
base_urls = st.one_of(
    st.just(""),
    st.sampled_from(
        [
            "https://api.example.com/v1/",
            "http://localhost:8080",
            "https://bedrock-runtime.us-east-1.amazonaws.com",
            "ftp://example.com",
            " https://padded.example.com",
            "https://nul.example.com/\x00",
            "not a url",
            "http://[::1",
        ]
    ),
    st.text(max_size=40),
)
secrets = st.one_of(
    st.sampled_from(POOL), st.sampled_from(["", " sk-pad ", "sk\nnl"]), st.text(max_size=30)
)
display_names = st.one_of(
    st.just(""), st.text(max_size=30), st.text(alphabet="ab", min_size=198, max_size=203)
)
bedrock = st.one_of(
    st.none(),
    st.builds(
        pb.BedrockSettingsInput,
        region=st.one_of(
            st.sampled_from(["", "us-east-1", "eu-west-1", "Bad Region"]), st.text(max_size=12)
        ),
        model=st.sampled_from(["", "model-a", "x" * 300]),
        small_fast_model=st.sampled_from(["", "model-b"]),
        role_arn=st.sampled_from(["", "arn:aws:iam::123456789012:role/bedrock", "arn:nope"]),
        access_key=st.sampled_from(["", AWS_KEY]),
        access_key_secret=st.sampled_from(["", AWS_SECRET]),
    ),
)
refs = st.one_of(
    names,
    st.tuples(st.just("known-id"), st.integers(min_value=0, max_value=50)),
    st.uuids().map(str),
)
key_entries = st.one_of(
    st.tuples(st.just("keep"), st.integers(min_value=0, max_value=6)),
    st.tuples(st.just("secret"), secrets),
    st.tuples(st.just("id"), st.uuids().map(str)),
    st.just(("empty", "")),
)
paths = st.lists(
    st.sampled_from([*sorted(UPDATE_PATHS), "name", "type", "colour", "", "bedrock."]),
    max_size=4,
)


@st.composite
def create_ops(draw: st.DrawFn) -> tuple[str, pb.CreateProviderRequest]:
    request = pb.CreateProviderRequest(
        name=draw(names),
        type=draw(types),  # type: ignore[arg-type]
        display_name=draw(display_names),
        base_url=draw(base_urls),
        disabled=draw(st.booleans()),
        keys=draw(st.lists(secrets, max_size=7)),
    )
    settings_input = draw(bedrock)
    if settings_input is not None:
        request.bedrock.CopyFrom(settings_input)
    return "create", request


@st.composite
def update_ops(draw: st.DrawFn) -> tuple[str, Any, pb.UpdateProviderRequest, list[tuple[str, Any]]]:
    request = pb.UpdateProviderRequest(
        update_mask=FieldMask(paths=draw(paths)),
        display_name=draw(display_names),
        base_url=draw(base_urls),
        enabled=draw(st.booleans()),
    )
    settings_input = draw(bedrock)
    if settings_input is not None:
        request.bedrock.CopyFrom(settings_input)
    return "update", draw(refs), request, draw(st.lists(key_entries, max_size=7))


# Mostly-valid requests, so that writes succeed often and conflicts happen.
valid_names = st.one_of(known_names, st.from_regex(r"\A[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,4})?\Z"))
valid_urls = st.sampled_from(["https://api.example.com/v1/", "http://localhost:8080/", ""])
pool_keys = st.lists(st.sampled_from(POOL), max_size=5, unique=True)


@st.composite
def valid_create_ops(draw: st.DrawFn) -> tuple[str, pb.CreateProviderRequest]:
    ptype = draw(st.sampled_from(sorted(TYPES)))
    request = pb.CreateProviderRequest(
        name=draw(valid_names),
        type=TYPES[ptype].wire,
        display_name=draw(st.sampled_from(["", "Team A", "Ünïcode ✓"])),
        disabled=draw(st.booleans()),
    )
    if ptype == "bedrock":
        request.bedrock.region = draw(st.sampled_from(["us-east-1", "eu-west-1"]))
        if draw(st.booleans()):
            request.bedrock.access_key = AWS_KEY
            request.bedrock.access_key_secret = AWS_SECRET
    elif ptype != "copilot":
        request.keys.extend(draw(pool_keys))
    if not TYPES[ptype].default_base_url and ptype != "bedrock":
        request.base_url = draw(valid_urls.filter(bool))
    return "create", request


@st.composite
def valid_update_ops(
    draw: st.DrawFn,
) -> tuple[str, Any, pb.UpdateProviderRequest, list[tuple[str, Any]]]:
    chosen = draw(
        st.lists(
            st.sampled_from(["display_name", "enabled", "keys", "base_url"]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    request = pb.UpdateProviderRequest(
        update_mask=FieldMask(paths=chosen),
        display_name=draw(st.sampled_from(["", "Renamed"])),
        base_url=draw(valid_urls),
        enabled=draw(st.booleans()),
    )
    entries = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("keep"), st.integers(min_value=0, max_value=4)),
                st.tuples(st.just("secret"), st.sampled_from(POOL)),
            ),
            max_size=5,
        )
    )
    ref = draw(st.one_of(known_names, st.tuples(st.just("known-id"), st.integers(0, 50))))
    return "update", ref, request, entries


operations = st.one_of(
    valid_create_ops(),
    valid_create_ops(),
    create_ops(),
    valid_update_ops(),
    valid_update_ops(),
    update_ops(),
    st.tuples(st.just("delete"), refs),
    st.tuples(st.just("get"), refs),
    st.just(("list",)),
)

# ----------------------------------------------------------------------------- harness


@contextmanager
def threaded_service(
    database_url: str, data_dir: Path
) -> Iterator[tuple[RunningService, asyncio.AbstractEventLoop]]:
    """A config service on its own event loop in a daemon thread."""
    env = base_env(database_url, data_dir)
    env["AIBRIDGE_ENCRYPTION_KEYS"] = ENCRYPTION_KEY
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="config-service", daemon=True)
    thread.start()
    try:
        running = asyncio.run_coroutine_threadsafe(
            start(ConfigServiceSettings.from_env(env), env), loop
        ).result(60)
        try:
            yield running, loop
        finally:
            asyncio.run_coroutine_threadsafe(running.stop(grace=0), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@dataclass
class Fuzzer:
    running: RunningService
    api: pb_grpc.ProviderAdminServiceStub
    writes_ok: int = 0
    ids: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)

    def ref(self, value: Any) -> str:
        if isinstance(value, tuple):
            return self.ids[value[1] % len(self.ids)] if self.ids else "never-created"
        assert isinstance(value, str)
        return value

    def call(self, method: str, request: Any) -> Any:
        error: grpc.Call | None = None
        try:
            response = getattr(self.api, method)(request, metadata=OWNER_MD, timeout=30)
        except grpc.RpcError as exc:
            error = exc if isinstance(exc, grpc.Call) else None
            if error is None:
                raise
        if error is not None:
            code = error.code()
            self.outcomes[f"{method} {code.name}"] += 1
            assert code in ALLOWED, f"{method}({request!r}) -> {code.name}: {error.details()}"
            details = error.details() or ""
            for secret in LEAK_CHECKED:
                assert secret not in details, f"{method} error message carries a secret"
            return None
        self.outcomes[f"{method} OK"] += 1
        raw = response.SerializeToString()
        for secret in LEAK_CHECKED:
            assert secret.encode() not in raw, f"{method} response carries a secret"
        return response

    def key_inputs(self, ref: str, entries: list[tuple[str, Any]]) -> list[pb.KeyInput]:
        current: list[str] = []
        if any(kind == "keep" for kind, _ in entries):
            got = self.call("GetProvider", pb.GetProviderRequest(id_or_name=ref))
            current = [k.id for k in got.provider.keys] if got is not None else []
        out: list[pb.KeyInput] = []
        for kind, value in entries:
            if kind == "keep":
                out.append(
                    pb.KeyInput(id=current[value % len(current)])
                    if current
                    else pb.KeyInput(id=str(value))
                )
            elif kind == "secret":
                out.append(pb.KeyInput(secret=value))
            elif kind == "id":
                out.append(pb.KeyInput(id=value))
            else:
                out.append(pb.KeyInput())
        return out

    def run(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "create":
            response = self.call("CreateProvider", op[1])
            if response is not None:
                self.writes_ok += 1
                self.ids.append(response.provider.id)
        elif kind == "update":
            _, ref_value, request, entries = op
            request.id_or_name = self.ref(ref_value)
            if "keys" in request.update_mask.paths:
                request.keys.extend(self.key_inputs(request.id_or_name, entries))
            if self.call("UpdateProvider", request) is not None:
                self.writes_ok += 1
        elif kind == "delete":
            if self.call("DeleteProvider", pb.DeleteProviderRequest(id_or_name=self.ref(op[1]))):
                self.writes_ok += 1
        elif kind == "get":
            self.call("GetProvider", pb.GetProviderRequest(id_or_name=self.ref(op[1])))
        else:
            self.call("ListProviders", pb.ListProvidersRequest())

    def check_invariants(self, initial_revision: int) -> None:
        db = self.running.db
        with db.read() as session:
            providers = list(session.execute(select(Provider)).scalars())
            key_counts = dict(
                session.execute(
                    select(ProviderKey.provider_id, func.count()).group_by(ProviderKey.provider_id)
                ).all()
            )
            stored = [
                (row.secret, row.settings or "")
                for row in session.execute(
                    select(ProviderKey.secret, Provider.settings).join(Provider)
                )
            ]
            audited = session.execute(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action.like("provider.%"))
            ).scalar_one()
        assert all(count <= MAX_KEYS for count in key_counts.values()), key_counts
        for secret in LEAK_CHECKED:
            assert not any(secret in a or secret in b for a, b in stored), "plaintext at rest"
        live = [p for p in providers if not p.deleted]
        assert len({p.name for p in live}) == len(live), "duplicate live names"
        for p in providers:
            assert NAME_RE.match(p.name) and len(p.name) <= MAX_NAME_LENGTH, p.name
            if TYPES[p.type].keyless_because:
                assert not key_counts.get(p.id), f"{p.type} provider {p.name} holds keys"
            if p.deleted:
                assert not p.enabled
        assert db.revision() == initial_revision + self.writes_ok
        assert audited == self.writes_ok
        assert self.running.hub.revision == db.revision()


def fuzz(database_url: str, data_dir: Path, examples: int) -> Fuzzer:
    with (
        threaded_service(database_url, data_dir) as (running, loop),
        grpc.insecure_channel(running.target) as channel,
    ):
        for role in (Role.AUDITOR, Role.MEMBER):
            tokens.create_token(running.db, SYSTEM, f"fuzz-{role.value}", role)
        asyncio.run_coroutine_threadsafe(running.hub.refresh(), loop).result(30)
        initial = running.db.revision()
        fuzzer = Fuzzer(running, pb_grpc.ProviderAdminServiceStub(channel))

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(st.lists(operations, min_size=1, max_size=12))
        def run_examples(ops: list[tuple[Any, ...]]) -> None:
            for op in ops:
                fuzzer.run(op)
            fuzzer.check_invariants(initial)

        run_examples()
        fuzzer.check_invariants(initial)
        return fuzzer


def report(fuzzer: Fuzzer) -> int:
    total = sum(fuzzer.outcomes.values())
    print(f"{total} requests: " + ", ".join(f"{k}={v}" for k, v in sorted(fuzzer.outcomes.items())))
    return total


def test_generated_admin_requests_keep_the_database_consistent(
    database_url: str, tmp_path: Path
) -> None:
    """Thousands of generated admin requests answer only documented codes and leave every DB invariant intact."""
    fuzzer = fuzz(database_url, tmp_path, examples=450)
    assert report(fuzzer) >= 2000
    assert fuzzer.writes_ok > 50
    for outcome in (
        "CreateProvider OK",
        "UpdateProvider OK",
        "DeleteProvider OK",
        "CreateProvider ALREADY_EXISTS",
        "GetProvider NOT_FOUND",
        "UpdateProvider INVALID_ARGUMENT",
    ):
        assert fuzzer.outcomes[outcome], f"the generator never produced {outcome}"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_generated_admin_requests_long_run(database_url: str, tmp_path: Path) -> None:
    """The long variant: many more generated admin requests, same properties."""
    fuzzer = fuzz(database_url, tmp_path, examples=3000)
    assert report(fuzzer) >= 15000
