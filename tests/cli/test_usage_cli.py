"""`aibridge usage` against a real config-service process: list, show, summary."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from aibridge.commands.usage import parse_when
from aibridge.config.v1 import usage_pb2
from aibridge.config.v1 import usage_service_pb2 as pb
from aibridge.config.v1 import usage_service_pb2_grpc as pb_grpc
from aibridge.recording import new_record_id
from tests.cli.test_cli import run
from tests.fixtures.processes import Proc
from tests.fixtures.services import ADMIN_TOKEN, BRIDGE_TOKEN, StartProcess


def _record(
    started: datetime, principal: str, model: str, prompt: str = ""
) -> usage_pb2.Interception:
    record = usage_pb2.Interception(
        id=new_record_id(int(started.timestamp() * 1e9)),
        provider_name="openai",
        requested_model=model,
        outcome=usage_pb2.OUTCOME_COMPLETED,
        status_code=200,
        principal_id=principal,
        principal_name=f"user-{principal}",
        client="codex",
        usage=usage_pb2.TokenUsage(input_tokens=100, output_tokens=20),
        prompt=prompt,
        tool_calls=[usage_pb2.ToolCall(name="shell", call_id="call_9", arguments='{"a": 1}')],
    )
    record.started_at.FromDatetime(started)
    record.ended_at.FromDatetime(started + timedelta(milliseconds=120))
    return record


@pytest.fixture
def proc(start_process: StartProcess) -> Proc:
    return start_process()


def _seed(proc: Proc, records: list[usage_pb2.Interception]) -> None:
    with grpc.insecure_channel(proc.target) as channel:
        pb_grpc.UsageServiceStub(channel).RecordInterceptions(
            pb.RecordInterceptionsRequest(interceptions=records),
            metadata=(("authorization", f"Bearer {BRIDGE_TOKEN}"),),
            timeout=30,
        )


def _usage(proc: Proc, *args: str) -> tuple[int, str, str]:
    env = {"AIBRIDGE_CONFIG_SERVICE": proc.target, "AIBRIDGE_TOKEN": ADMIN_TOKEN}
    result = run("usage", *args, env=env)
    return result.returncode, result.stdout, result.stderr


def test_list_show_and_summary_answer_what_was_recorded(proc: Proc) -> None:
    """list --since 7d --json, show ID and summary --by user,model report the recorded calls."""
    now = datetime.now(UTC)
    old = _record(now - timedelta(days=10), "p-1", "gpt-4o")
    recent = [_record(now - timedelta(hours=h), f"p-{h % 2}", "o3") for h in range(1, 5)]
    _seed(proc, [old, *recent])

    code, out, err = _usage(proc, "list", "--since", "7d", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert [r["id"] for r in listed] == [r.id for r in recent]
    assert listed[0]["outcome"] == "completed"
    assert listed[0]["usage"]["input_tokens"] == 100

    code, out, err = _usage(proc, "list", "--since", "24h", "--limit", "3")
    assert code == 0, err
    assert out.splitlines()[0].split()[:3] == ["STARTED", "ID", "USER"]
    assert len(out.splitlines()) == 1 + 3

    code, out, err = _usage(proc, "show", old.id, "--json")
    assert code == 0, err
    assert json.loads(out)["tool_calls"] == [
        {"name": "shell", "call_id": "call_9", "arguments": '{"a": 1}'}
    ]

    code, out, err = _usage(proc, "summary", "--by", "user,model", "--since", "7d", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["total"]["requests"] == 4
    assert sorted(g["principal_id"] for g in summary["groups"]) == ["p-0", "p-1"]
    assert sum(g["counts"]["input_tokens"] for g in summary["groups"]) == 400

    code, out, err = _usage(proc, "summary", "--by", "user,model", "--since", "7d")
    assert code == 0, err
    assert out.splitlines()[0].split()[:3] == ["USER", "MODEL", "REQUESTS"]
    assert out.splitlines()[-1].split()[:2] == ["TOTAL", "4"]


def test_show_escapes_control_characters_of_a_prompt(proc: Proc) -> None:
    """A prompt holding an ANSI escape and a newline is printed escaped, never raw."""
    record = _record(datetime.now(UTC), "p-1", "gpt-4o", prompt="hi\x1b[2J\nthere")
    _seed(proc, [record])
    code, out, err = _usage(proc, "show", record.id)
    assert code == 0, err
    assert "\x1b" not in out
    assert "hi\\x1b[2J\\nthere" in out


@pytest.mark.parametrize(
    "args",
    [
        ("list", "--since", "yesterday"),
        ("summary", "--by", "user,colour"),
        ("list", "--limit", "0"),
    ],
)
def test_bad_flags_exit_2_with_a_message(proc: Proc, args: tuple[str, ...]) -> None:
    """An unparseable duration, an unknown --by dimension or a bad limit exit 2, saying why."""
    code, _, err = _usage(proc, *args)
    assert code == 2
    assert err.startswith("aibridge usage:")


def test_durations_count_back_from_now() -> None:
    """24h and 7d mean that long ago; an ISO time without a zone is UTC."""
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    assert parse_when("24h", now) == datetime(2026, 3, 9, 12, tzinfo=UTC)
    assert parse_when("7d", now) == datetime(2026, 3, 3, 12, tzinfo=UTC)
    assert parse_when("2026-03-01T00:00:00") == datetime(2026, 3, 1, tzinfo=UTC)
