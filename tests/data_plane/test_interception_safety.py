"""Records are safe to ship whatever a request carries: no secret in any field, every
string fit for the config service (which would refuse the whole batch otherwise), the
answer read in bounded memory; ids the proxy proposes are kept only when fit."""

from __future__ import annotations

import gzip
import json
import time
from typing import Any

import httpx
import pytest
from dp_fakes import (
    KEY_A,
    MEMBER_TOKEN,
    ListSink,
    Serve,
)

from aibridge import recording
from aibridge.config.v1 import usage_pb2
from aibridge.config.v1 import usage_service_pb2 as pb
from aibridge.config.v1.provider_pb2 import Provider
from config_service.servicers.usage import batch_rows, record_row
from data_plane.bridge.interception.record import Capture, RequestIds, interception
from data_plane.bridge.interception.response import MAX_JSON_BODY, ResponseReader
from data_plane.gateway_auth import Principal
from data_plane.recording.batch import Batch
from tests.fixtures.upstream import FakeUpstream, Reply, Seen, json_reply

BYOK_KEY = "sk-ant-users-own-key-0000000000000000000000"
SECRETS = (MEMBER_TOKEN, KEY_A, BYOK_KEY)


@pytest.fixture
async def url(serve_recording: Serve, both_providers: tuple[Provider, Provider]) -> str:
    """A recording bridge with prompt recording on (the most the records can hold)."""
    return await serve_recording(*both_providers, AIBRIDGE_RECORD_PROMPTS="true")


def echo_secrets(seen: Seen) -> Reply:
    """An upstream that puts the credentials it was sent, and the pooled key, in its answer."""
    secrets = " ".join([KEY_A, *seen.headers.values(), seen.target])
    return json_reply(
        {
            "id": "c1",
            "object": "chat.completion",
            "model": f"model {secrets}",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": f"call {secrets}",
                                "type": "function",
                                "function": {"name": f"f {secrets}", "arguments": secrets},
                            }
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        }
    )


def everywhere(secret: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Headers and a body that carry `secret` in every field a record is built from."""
    headers = {
        "user-agent": f"OpenAI/Python {secret}",
        "x-stainless-lang": secret,
        "originator": secret,
        "x-claude-code-session-id": secret,
        "session_id": secret,
        "conversation_id": secret,
        "x-aibridge-via": "proxy",
        "x-aibridge-request-id": secret,
    }
    body = {
        "model": secret,
        "metadata": {"user_id": f"user_x_session_{secret}"},
        "messages": [{"role": "user", "content": f"my key is {secret}"}],
    }
    return headers, body


def assert_no_secret(records: list[usage_pb2.Interception]) -> None:
    for record in records:
        text = str(record) + record.SerializeToString().decode("utf-8", "replace")
        for secret in SECRETS:
            assert secret not in text, f"{secret[:8]}... in record"


async def test_no_secret_reaches_a_record_from_any_header_or_body_field(
    url: str, upstream: FakeUpstream, records: ListSink
) -> None:
    """A request's credentials, and the provider's keys, echoed in every header, body
    field, path and upstream answer field, never reach a record."""
    upstream.responder = echo_secrets
    pooled = {"authorization": f"Bearer {MEMBER_TOKEN}"}
    own = {"authorization": f"Bearer {BYOK_KEY}", "x-aibridge-token": MEMBER_TOKEN}
    anthropic_key = {"x-api-key": MEMBER_TOKEN}
    async with httpx.AsyncClient(base_url=url) as http:
        for credentials, known in ((pooled, MEMBER_TOKEN), (own, f"{MEMBER_TOKEN} {BYOK_KEY}")):
            headers, body = everywhere(f"{known} {KEY_A}")
            headers |= credentials
            await http.post("/openai/v1/chat/completions", json=body, headers=headers)
            await http.get(f"/openai/v1/models/{known.replace(' ', '/')}", headers=headers)
        headers, body = everywhere(f"{MEMBER_TOKEN} {KEY_A}")
        await http.post("/anthropic/v1/messages", json=body, headers=headers | anthropic_key)
    assert len(records.records) == 5
    assert_no_secret(records.records)
    assert {r.credential_kind for r in records.records} == {
        usage_pb2.CREDENTIAL_KIND_POOLED,
        usage_pb2.CREDENTIAL_KIND_BYOK,
    }


async def test_a_clients_own_key_is_masked_even_where_an_earlier_record_had_its_text(
    url: str, records: ListSink
) -> None:
    """A client's own key sent beside the gateway token is masked in its record even when the request is refused before the key is used and an earlier request (without that key) sent the same text."""
    headers = {"user-agent": f"sdk {BYOK_KEY}"}
    pooled = {"authorization": f"Bearer {MEMBER_TOKEN}"}
    own = {"authorization": f"Bearer {BYOK_KEY}", "x-aibridge-token": MEMBER_TOKEN}
    async with httpx.AsyncClient(base_url=url) as http:
        for credentials in (pooled, own):
            answer = await http.get("/openai/v1/not-a-route", headers=headers | credentials)
            assert answer.status_code == 404
    first, second = records.records
    assert BYOK_KEY in first.user_agent  # not a secret of that request
    assert BYOK_KEY not in str(second)
    assert second.credential_kind == usage_pb2.CREDENTIAL_KIND_UNSPECIFIED


ODD = "a\x00b\x1b[31mc\u202ed\ud800e\n\tf\x7f"


async def test_odd_and_huge_strings_yield_records_the_config_service_accepts(
    url: str, upstream: FakeUpstream, records: ListSink
) -> None:
    """Control, format and NUL characters, lone surrogates and oversize values are cut and
    replaced so the config service's own validation accepts every record."""
    huge = "m" * 1_000_000

    def odd_answer(seen: Seen) -> Reply:
        calls = [
            {"id": f"{ODD}{i}", "function": {"name": ODD * 50, "arguments": ODD * 100}}
            for i in range(recording.MAX_TOOL_CALLS + 50)
        ]
        doc = {
            "model": ODD + huge,
            "choices": [{"index": 0, "message": {"tool_calls": calls}}],
            "usage": {"prompt_tokens": -5, "completion_tokens": 2**62},
        }
        return Reply(body=json.dumps(doc).encode())

    upstream.responder = odd_answer
    body = {
        "model": ODD + huge,
        "metadata": {"user_id": f"user_x_session_{ODD}{huge}"},
        "messages": [{"role": "user", "content": ODD + huge}],
    }
    headers = {
        "authorization": f"Bearer {MEMBER_TOKEN}",
        "user-agent": b"ua\t\xe9\xff" + b"u" * 20_000,
        "session_id": b"s\t\xe9",
    }
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        answer = await http.post(
            "/openai/v1/chat/completions",
            content=json.dumps(body).encode(),
            headers={**headers, "content-type": "application/json"},
        )
    assert answer.status_code == 200
    record = await records.one()
    row, tool_rows = record_row("interceptions[0]", record)  # raises on anything it refuses
    assert len(row["user_agent"]) == recording.MAX_USER_AGENT
    assert len(row["prompt"]) == recording.MAX_PROMPT
    assert len(tool_rows) == recording.MAX_TOOL_CALLS
    assert row["input_tokens"] == 0


def test_malformed_or_compressed_answers_yield_no_usage_and_no_error() -> None:
    """Broken JSON, broken SSE, an unknown encoding and a gzip bomb give no usage, no error."""
    cases: list[tuple[bool, str | None, list[bytes]]] = [
        (False, None, [b'{"usage": {"prompt_tokens": 1']),
        (False, None, [b"[" * 100_000 + b"]" * 100_000]),
        (True, None, [b'data: {"usage": {"prompt_tokens": [}}\n\n', b"data: \xff\xfe\n\n"]),
        (True, None, [b"data: " + b"[" * 100_000 + b"\n\n"]),
        (False, "br", [b'{"usage": {"prompt_tokens": 1}}']),
        (False, "gzip", [gzip.compress(b" " * (MAX_JSON_BODY * 4) + b'{"usage": {}}')]),
        (True, "gzip", [gzip.compress(b'data: {"usage": {"prompt_tokens": 1}}\n\n')]),
    ]
    for sse, encoding, chunks in cases:
        reader = ResponseReader(sse, encoding, arguments=True)
        for chunk in chunks:
            reader.feed(chunk)
        assert reader.finish().tokens == {}


def test_gzip_blocking_answer_is_read_within_bounds() -> None:
    """A gzip-encoded blocking answer of reasonable size is inflated and read."""
    reader = ResponseReader(False, "gzip")
    reader.feed(gzip.compress(b'{"model": "m", "usage": {"prompt_tokens": 4}}'))
    assert (reader.finish().tokens, reader.model) == ({"input": 4}, "m")


def test_sse_reader_memory_stays_bounded_for_one_endless_line() -> None:
    """A stream that never sends a newline is dropped line by line, not kept."""
    reader = ResponseReader(True, None, arguments=True)
    for _ in range(100):
        reader.feed(b"x" * 100_000)
    assert len(reader._buf) <= 1024 * 1024 + 100_000


def test_tool_arguments_are_capped_per_call_and_per_answer() -> None:
    """Streamed arguments stop growing at the per-call limit."""
    reader = ResponseReader(True, None, arguments=True)
    start = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "tool_use", "id": "t", "name": "n"},
    }
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "input_json_delta", "partial_json": "x" * 10_000},
    }
    reader.feed(f"data: {json.dumps(start)}\n\n".encode())
    for _ in range(50):
        reader.feed(f"data: {json.dumps(delta)}\n\n".encode())
    [(_, _, arguments)] = reader.tool_calls
    assert len(arguments) == recording.MAX_ARGUMENTS


def _uuid7(millis: int) -> bytes:
    return recording.new_record_id(millis * 1_000_000).encode()


def test_proxy_ids_are_kept_only_when_fresh_canonical_and_unused() -> None:
    """A proposed id is kept once, while fresh; stale, malformed or reused ones are replaced."""
    ids = RequestIds()
    now_ns = time.time_ns()
    now_ms = now_ns // 1_000_000
    fresh = _uuid7(now_ms - 1000)
    assert ids.take(fresh, now_ns) == fresh.decode()
    assert ids.take(fresh, now_ns) != fresh.decode()  # replayed
    stale = _uuid7(now_ms - 2 * RequestIds.WINDOW_MS)
    assert ids.take(stale, now_ns) != stale.decode()
    version4 = fresh[:14] + b"4" + fresh[15:]
    for bad in (b"not-an-id", fresh.upper(), b"0" * 36, version4, fresh + b"\n"):
        assert ids.take(bad, now_ns) != bad.decode()
    assert ids.take(None, now_ns) != fresh.decode()


def test_remembered_proxy_ids_stay_bounded() -> None:
    """However many ids the proxy proposes, the bridge remembers at most MAX_RECENT."""
    ids = RequestIds()
    now_ns = time.time_ns()
    for _ in range(RequestIds.MAX_RECENT + 100):
        ids.take(recording.new_record_id(now_ns).encode(), now_ns)
    assert len(ids._recent) <= RequestIds.MAX_RECENT


def test_a_record_reads_what_a_relay_cut_short_left_unread() -> None:
    """An answer relayed whole but not finished (the client left first) still gives its usage."""
    capture = Capture(recording.new_record_id(), time.time_ns(), {})
    capture.reader = ResponseReader(False, None)
    capture.reader.feed(b'{"model": "m", "usage": {"prompt_tokens": 3, "completion_tokens": 1}}')
    capture.end()
    record = interception(capture.values())
    assert (record.usage.input_tokens, record.usage.output_tokens, record.served_model) == (
        3,
        1,
        "m",
    )


def test_a_capture_serializes_to_its_built_record_whatever_it_holds() -> None:
    """The columnar wire record stores the same rows as the built one, for captures that share their describing fields or not, with secrets to mask and odd strings."""
    alice = Principal("0" * 64, "tok-a", "pr-a", "alice", 1)
    bob = Principal("1" * 64, "tok-b", "pr-b", "bob", 1)
    variants = [
        {},
        {"principal": bob},
        {"route": f"/v1/{KEY_A}/x"},
        {"user_agent": "ua\x00\u202e" + "u" * 600},
        {"requested_model": "m" * 300, "session_id": "s1"},
        {"credential_hint": "sk-…abcd", "credential_kind": usage_pb2.CREDENTIAL_KIND_BYOK},
        {"prompt": f"say {KEY_A}", "attempts": 2, "status": 502, "streamed": True},
        {},
    ]
    for variant in variants:
        started = time.time_ns()
        capture = Capture(recording.new_record_id(started), started, {b"user-agent": b"sdk/1"})
        capture.provider("prov", "openai")
        capture.route, capture.requested_model, capture.principal = "/v1/x", "gpt", alice
        capture.relayed, capture.status, capture.first_byte_ns = True, 200, started + 5
        capture.secrets = (KEY_A,)
        capture.reader = ResponseReader(False, None, arguments=True)
        capture.reader.feed(
            b'{"model":"gpt-1","usage":{"prompt_tokens":3,"completion_tokens":1},'
            b'"choices":[{"message":{"tool_calls":[{"id":"c1","function":'
            b'{"name":"f","arguments":"{}"}}]}}]}'
        )
        for name, value in variant.items():
            setattr(capture, name, value)
        capture.end(started + 10)
        values = capture.values()
        batch = Batch()
        batch.add(values)
        wire = pb.RecordInterceptionsRequest.FromString(batch.encode())
        rows, calls, _ = batch_rows(wire)
        row, tool_rows = record_row("r", interception(capture.values()))
        assert (rows, calls) == ([row], tool_rows)
        assert KEY_A not in str(wire)
