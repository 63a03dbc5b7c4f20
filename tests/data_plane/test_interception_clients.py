"""Client detection and session ids, from the headers (and body) clients really send."""

from __future__ import annotations

import anthropic
import httpx
import pytest
from dp_fakes import (
    MEMBER_TOKEN,
    ListSink,
    Serve,
)

from aibridge.config.v1.provider_pb2 import Provider
from aibridge.recording import CLIENT_RE, MAX_CLIENT
from data_plane.bridge.interception.clients import detect, session_from_metadata

CLAUDE_CODE_UA = "claude-cli/2.0.14 (external, cli)"
CODEX_UA = "codex_cli_rs/0.46.0 (Mac OS 15.6.1; arm64) iTerm.app/3.6.1"

DETECTED = [
    ({"user-agent": CLAUDE_CODE_UA, "x-stainless-lang": "js"}, "claude-code"),
    ({"user-agent": CODEX_UA, "originator": "codex_cli_rs"}, "codex"),
    ({"user-agent": "codex_exec/0.46.0 (Ubuntu 24.4.0; x86_64) dumb"}, "codex"),
    ({"user-agent": "reqwest/0.12", "originator": "codex_vscode"}, "codex"),
    ({"user-agent": "Cursor/1.5.9 (darwin arm64)"}, "cursor"),
    ({"user-agent": "node-fetch", "x-cursor-client-version": "1.5.9"}, "cursor"),
    (
        {"user-agent": "GitHubCopilotChat/0.31.0", "copilot-integration-id": "vscode-chat"},
        "copilot",
    ),
    ({"user-agent": "OpenAI/Python 1.99.9", "x-stainless-lang": "python"}, "openai-python"),
    ({"user-agent": "AsyncOpenAI/Python 1.99.9", "x-stainless-lang": "python"}, "openai-python"),
    ({"user-agent": "OpenAI/JS 5.12.0", "x-stainless-lang": "js"}, "openai-typescript"),
    ({"user-agent": "OpenAI/Go 1.12.0", "x-stainless-lang": "go"}, "openai-go"),
    ({"user-agent": "OpenAI/Java 3.0.0", "x-stainless-lang": "java"}, "openai-java"),
    ({"user-agent": "Anthropic/Python 0.64.0", "x-stainless-lang": "python"}, "anthropic-python"),
    (
        {"user-agent": "AsyncAnthropic/Python 0.64.0", "x-stainless-lang": "python"},
        "anthropic-python",
    ),
    ({"user-agent": "Anthropic/JS 0.60.0", "x-stainless-lang": "js"}, "anthropic-typescript"),
    (
        {"user-agent": "Anthropic/Python 0.64.0", "x-stainless-lang": "Py thon!\x00"},
        "anthropic-python",
    ),
    (
        {"user-agent": "Anthropic/Python 0.64.0", "x-stainless-lang": "\x01\x02"},
        "anthropic-unknown",
    ),
    ({"user-agent": "MyTool/1.0", "x-stainless-lang": "python"}, "other"),
    ({"user-agent": "curl/8.5.0"}, "other"),
    ({}, "other"),
]


@pytest.mark.parametrize(("headers", "client"), DETECTED, ids=[c for _, c in DETECTED])
def test_client_is_detected_from_its_headers(headers: dict[str, str], client: str) -> None:
    """Each known client's headers name it; the slug always fits the record's pattern."""
    raw = {k.encode(): v.encode() for k, v in headers.items()}
    detected = detect(raw)
    assert detected == client
    assert CLIENT_RE.match(detected) and len(detected) <= MAX_CLIENT


@pytest.mark.parametrize(
    ("user_id", "session"),
    [
        (
            "user_9f2c_account_0b7a4c1e-1111-2222-3333-444455556666"
            "_session_5c0e3a9e-aaaa-bbbb-cccc-ddddeeeeffff",
            "5c0e3a9e-aaaa-bbbb-cccc-ddddeeeeffff",
        ),
        ('{"device_id":"d","session_id":"s-123"}', "s-123"),
        ("user_9f2c", ""),
        ("{not json", ""),
        (42, ""),
    ],
)
def test_claude_code_session_is_read_from_metadata_user_id(user_id: object, session: str) -> None:
    """Claude Code's metadata.user_id gives its session id, in either format, else none."""
    assert session_from_metadata({"metadata": {"user_id": user_id}}) == session


@pytest.fixture
async def url(serve_recording: Serve, both_providers: tuple[Provider, Provider]) -> str:
    """A recording bridge serving an OpenAI and an Anthropic provider on the fake upstream."""
    return await serve_recording(*both_providers)


async def test_anthropic_sdk_is_recorded_as_anthropic_python(url: str, records: ListSink) -> None:
    """The official Anthropic SDK's own headers make its records say anthropic-python."""
    async with anthropic.AsyncAnthropic(
        base_url=f"{url}/anthropic", api_key=MEMBER_TOKEN, max_retries=0
    ) as client:
        await client.messages.create(
            model="claude-test", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    record = await records.one()
    assert record.client == "anthropic-python"
    assert record.user_agent.startswith("AsyncAnthropic/Python ")


async def test_claude_code_request_records_client_and_session(url: str, records: ListSink) -> None:
    """Claude Code's User-Agent and session header are recorded as client and session."""
    headers = {
        "x-api-key": MEMBER_TOKEN,
        "user-agent": CLAUDE_CODE_UA,
        "x-claude-code-session-id": "cc-session-1",
        "anthropic-version": "2023-06-01",
    }
    body = {
        "model": "claude-test",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"user_id": "user_x_account_y_session_from-body"},
    }
    async with httpx.AsyncClient(base_url=url) as http:
        await http.post("/anthropic/v1/messages", json=body, headers=headers)
        del headers["x-claude-code-session-id"]
        await http.post("/anthropic/v1/messages", json=body, headers=headers)
    first, second = records.records
    assert (first.client, first.user_agent, first.session_id) == (
        "claude-code",
        CLAUDE_CODE_UA,
        "cc-session-1",
    )
    assert second.session_id == "from-body"


async def test_codex_request_records_client_and_session(url: str, records: ListSink) -> None:
    """Codex's User-Agent and session_id header are recorded as client and session."""
    headers = {
        "authorization": f"Bearer {MEMBER_TOKEN}",
        "user-agent": CODEX_UA,
        "originator": "codex_cli_rs",
        "session_id": "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    }
    async with httpx.AsyncClient(base_url=url) as http:
        await http.post(
            "/openai/v1/responses", json={"model": "gpt-5-codex", "input": "hi"}, headers=headers
        )
    record = await records.one()
    assert (record.client, record.session_id) == ("codex", "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
