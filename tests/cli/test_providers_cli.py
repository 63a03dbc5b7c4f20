"""`aibridge providers` and `aibridge subscribers` as a user runs them, against a real config service."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from aibridge.config.v1 import config_service_pb2 as cpb
from aibridge.config.v1 import config_service_pb2_grpc as cpb_grpc
from tests.fixtures.processes import AIBRIDGE, Proc
from tests.fixtures.services import (
    ADMIN_TOKEN,
    BRIDGE_TOKEN,
    PROXY_TOKEN,
    StartProcess,
)
from tests.fixtures.waits import eventually

KEY_A = "sk-cli-ALPHA-7f3e9d1c5b2a48600a1b"
KEY_B = "sk-cli-BRAVO-0c2d4e6f8a1b3c5d7e2c"
KEY_C = "sk-cli-CHARLIE-94b8d2f6a0c4e1373d"
KEY_D = "sk-cli-DELTA-5e1a9c3f7b2d6e0484e"
AWS_KEY = "AKIACLIEXAMPLE000042"
AWS_SECRET = "aws-cli-SECRET-0123456789abcdefghijkl"
SECRETS = (KEY_A, KEY_B, KEY_C, KEY_D, AWS_SECRET, AWS_KEY)


def aibridge(
    proc: Proc | None,
    *args: str,
    token: str = ADMIN_TOKEN,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    target: str | None = None,
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("AIBRIDGE_", "CODER_"))}
    full["AIBRIDGE_CONFIG_SERVICE"] = target or (proc.target if proc else "127.0.0.1:1")
    if token:
        full["AIBRIDGE_TOKEN"] = token
    full.update(env or {})
    result = subprocess.run(
        [AIBRIDGE, *args],
        env=full,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr, f"a secret was printed by {args}"
    return result


@pytest.fixture
def proc(start_process: StartProcess) -> Proc:
    return start_process()


def ok_json(result: subprocess.CompletedProcess[str]) -> object:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_provider_lifecycle(proc: Proc) -> None:
    """Create, get, list, update, add/list/remove keys and delete a provider with the CLI; no secret is ever printed."""
    env = {"KEY_A": KEY_A, "KEY_B": KEY_B, "KEY_D": KEY_D}
    created_shown_and_listed(proc, env)
    updated(proc)
    keys_added_listed_and_removed(proc, env)
    deleted(proc)
    assert not any(secret in line for line in proc.lines for secret in SECRETS)


def created_shown_and_listed(proc: Proc, env: dict[str, str]) -> None:
    """`providers create` (keys from the environment), then `get` and `list` show it."""
    created = ok_json(
        aibridge(
            proc,
            "providers",
            "create",
            "team-openai",
            "--type",
            "openai",
            "--display-name",
            "Team OpenAI",
            "--keys-from-env",
            "KEY_A",
            "--keys-from-env",
            "KEY_B",
            "--json",
            env=env,
        )
    )
    assert isinstance(created, dict)
    assert created["name"] == "team-openai"
    assert created["type"] == "openai"
    assert created["status"] == "enabled"
    assert created["key_count"] == 2
    assert [k["hint"] for k in created["keys"]] == ["sk-c...0a1b", "sk-c...7e2c"]

    shown = aibridge(proc, "providers", "get", "team-openai")
    assert shown.returncode == 0, shown.stderr
    assert "Team OpenAI" in shown.stdout and "https://api.openai.com/v1/" in shown.stdout
    assert "sk-c...0a1b" in shown.stdout

    listed = aibridge(proc, "providers", "list")
    assert listed.returncode == 0
    header, row = listed.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "TYPE", "STATUS", "KEYS"]
    assert row.split()[:4] == ["team-openai", "openai", "enabled", "2"]


def updated(proc: Proc) -> None:
    """`providers update` disables it and moves its base URL."""
    updated = ok_json(
        aibridge(
            proc,
            "providers",
            "update",
            "team-openai",
            "--disable",
            "--base-url",
            "https://proxy.example.com/v1/",
            "--json",
        )
    )
    assert isinstance(updated, dict)
    assert updated["status"] == "disabled"
    assert updated["base_url"] == "https://proxy.example.com/v1/"


def keys_added_listed_and_removed(proc: Proc, env: dict[str, str]) -> None:
    """`keys add` (stdin, then the environment), `keys list`, `keys remove` (twice: the second
    finds no key)."""
    added = aibridge(proc, "providers", "keys", "add", "team-openai", stdin=KEY_C + "\n")
    assert added.returncode == 0, added.stderr
    assert "sk-c...373d" in added.stdout and "3 key(s)" in added.stdout
    added_json = ok_json(
        aibridge(
            proc,
            "providers",
            "keys",
            "add",
            "team-openai",
            "--from-env",
            "KEY_D",
            "--json",
            env=env,
        )
    )
    assert isinstance(added_json, dict) and added_json["hint"] == "sk-c...484e"

    keys = ok_json(aibridge(proc, "providers", "keys", "list", "team-openai", "--json"))
    assert isinstance(keys, list)
    assert [k["hint"] for k in keys] == ["sk-c...0a1b", "sk-c...7e2c", "sk-c...373d", "sk-c...484e"]
    removed = aibridge(proc, "providers", "keys", "remove", "team-openai", keys[1]["id"])
    assert removed.returncode == 0, removed.stderr
    after = ok_json(aibridge(proc, "providers", "keys", "list", "team-openai", "--json"))
    assert isinstance(after, list)
    assert [k["id"] for k in after] == [keys[0]["id"], keys[2]["id"], keys[3]["id"]]
    missing = aibridge(proc, "providers", "keys", "remove", "team-openai", keys[1]["id"])
    assert missing.returncode == 1
    assert "has no key" in missing.stderr


def deleted(proc: Proc) -> None:
    """`providers delete`: then `get` finds nothing and `list` is empty."""
    deleted = aibridge(proc, "providers", "delete", "team-openai")
    assert deleted.returncode == 0, deleted.stderr
    gone = aibridge(proc, "providers", "get", "team-openai")
    assert gone.returncode == 1
    assert "not found" in gone.stderr
    empty = aibridge(proc, "providers", "list", "--json")
    assert ok_json(empty) == []


def test_bedrock_provider_from_env_credentials(proc: Proc) -> None:
    """A Bedrock provider takes its AWS credentials from named environment variables and shows only their hint."""
    created = ok_json(
        aibridge(
            proc,
            "providers",
            "create",
            "aws",
            "--type",
            "bedrock",
            "--bedrock-region",
            "us-east-1",
            "--bedrock-access-key-env",
            "AK",
            "--bedrock-access-key-secret-env",
            "SK",
            "--json",
            env={"AK": AWS_KEY, "SK": AWS_SECRET},
        )
    )
    assert isinstance(created, dict)
    bedrock = created["bedrock"]
    assert bedrock["region"] == "us-east-1"
    assert bedrock["has_static_credentials"] is True
    assert bedrock["access_key_hint"] == "AKIA...0042"
    assert created["base_url"] == "https://bedrock-runtime.us-east-1.amazonaws.com"
    moved = ok_json(
        aibridge(proc, "providers", "update", "aws", "--bedrock-region", "eu-west-1", "--json")
    )
    assert isinstance(moved, dict)
    assert moved["bedrock"]["region"] == "eu-west-1"
    assert moved["bedrock"]["has_static_credentials"] is True
    shown = aibridge(proc, "providers", "get", "aws")
    assert "static (AKIA...0042)" in shown.stdout


def race_providers(proc: Proc) -> list[tuple[str, str]]:
    """Providers race-0 .. race-11 with 3 keys each: (provider, key id) of every key."""
    keys: list[tuple[str, str]] = []
    for p in range(12):
        created = ok_json(
            aibridge(
                proc,
                "providers",
                "create",
                f"race-{p}",
                "--type",
                "openai",
                "--json",
                *[f"--key=sk-race-{p}-old{n}-0123456789abcdef" for n in range(3)],
            )
        )
        assert isinstance(created, dict)
        keys += [(f"race-{p}", k["id"]) for k in created["keys"]]
    return keys


def key_ids(proc: Proc, name: str) -> set[str]:
    """The ids of provider `name`'s keys, from `keys list --json`."""
    listed = ok_json(aibridge(proc, "providers", "keys", "list", name, "--json"))
    assert isinstance(listed, list)
    return {k["id"] for k in listed}


def test_concurrent_key_changes_all_survive(proc: Proc) -> None:
    """60 concurrent `keys add` / `keys remove` processes on 12 providers: every acknowledged change is in the final key sets."""
    removals = race_providers(proc)
    # 3 removes and 2 adds per provider: the pool never needs more than its 5 keys.
    adds = [
        (f"race-{p}", f"sk-race-{p}-new{n}-0123456789abcdef") for p in range(12) for n in range(2)
    ]

    def add(name: str, secret: str) -> tuple[str, str | None]:
        result = aibridge(proc, "providers", "keys", "add", name, "--json", stdin=secret)
        return result.stderr, json.loads(result.stdout)["id"] if result.returncode == 0 else None

    def remove(name: str, key_id: str) -> tuple[str, str | None]:
        result = aibridge(proc, "providers", "keys", "remove", name, key_id)
        return result.stderr, key_id if result.returncode == 0 else None

    with ThreadPoolExecutor(max_workers=60) as pool:
        added = [(name, pool.submit(add, name, secret)) for name, secret in adds]
        removed = [(name, pool.submit(remove, name, key_id)) for name, key_id in removals]
        outcomes = [(name, f.result()) for name, f in added + removed]
    final = {f"race-{p}": key_ids(proc, f"race-{p}") for p in range(12)}
    lost_adds = [(n, f.result()[1]) for n, f in added if f.result()[1] not in (None, *final[n])]
    lost_removes = [(n, f.result()[1]) for n, f in removed if f.result()[1] in final[n]]
    assert not lost_adds and not lost_removes, (len(lost_adds), len(lost_removes))
    failed = [stderr for _, (stderr, acknowledged) in outcomes if acknowledged is None]
    assert not failed, (len(failed), failed[:3])
    assert all(len(ids) == 2 for ids in final.values()), final


def test_rpc_errors_exit_1_with_a_clear_message(proc: Proc) -> None:
    """Refusals of the config service exit 1 and name the status and the problem."""
    assert aibridge(proc, "providers", "create", "dup", "--type", "copilot").returncode == 0
    dup = aibridge(proc, "providers", "create", "dup", "--type", "copilot")
    assert dup.returncode == 1
    assert "already exists: provider 'dup' already exists" in dup.stderr
    bad = aibridge(proc, "providers", "create", "Bad_Name", "--type", "openai")
    assert bad.returncode == 1
    assert "invalid argument: name: must match" in bad.stderr
    padded = aibridge(proc, "providers", "keys", "add", "dup", stdin=" " + KEY_A)
    assert padded.returncode == 1
    assert "invalid argument: secret: must not have leading or trailing whitespace" in padded.stderr
    unknown_token = aibridge(proc, "providers", "list", token="nope-" * 8)
    assert unknown_token.returncode == 1
    assert "unauthenticated" in unknown_token.stderr and "AIBRIDGE_TOKEN" in unknown_token.stderr
    denied = aibridge(proc, "providers", "create", "x", "--type", "copilot", token=PROXY_TOKEN)
    assert denied.returncode == 1
    assert "permission denied" in denied.stderr
    readable = aibridge(proc, "providers", "list", token=PROXY_TOKEN)
    assert readable.returncode == 0 and "dup" in readable.stdout
    down = aibridge(None, "providers", "list", target="127.0.0.1:9")
    assert down.returncode == 1
    assert "cannot reach the config service at 127.0.0.1:9" in down.stderr


def test_usage_errors_exit_2(proc: Proc) -> None:
    """Missing flags, unset environment variables, an empty update or no key on stdin exit 2 without calling the service."""
    cases = [
        (["providers", "create", "x"], {}, None, "--type"),
        (
            ["providers", "create", "x", "--type", "openai", "--keys-from-env", "UNSET_VAR"],
            {},
            None,
            "UNSET_VAR",
        ),
        (["providers", "update", "x"], {}, None, "nothing to update"),
        (["providers", "keys", "add", "x"], {}, "", "no key on standard input"),
        (["providers", "keys", "add", "x"], {}, f"{KEY_A}\n{KEY_B}\n", "several lines"),
        (
            ["providers", "create", "x", "--type", "bedrock", "--bedrock-access-key-env", "AK"],
            {"AK": AWS_KEY},
            None,
            "go together",
        ),
        (["providers", "frobnicate"], {}, None, "invalid choice"),
    ]
    for args, env, stdin, message in cases:
        result = aibridge(proc, *args, env=env, stdin=stdin)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    no_token = aibridge(proc, "providers", "list", token="")
    assert no_token.returncode == 2
    assert "no token" in no_token.stderr
    assert ok_json(aibridge(proc, "providers", "list", "--json")) == []


def test_subscribers_lists_open_streams(proc: Proc) -> None:
    """`aibridge subscribers` shows a connected watcher's node, role and versions, as a table and as JSON."""
    channel = grpc.insecure_channel(proc.target)
    stream = cpb_grpc.ConfigServiceStub(channel).WatchProviders(
        cpb.WatchProvidersRequest(node_id="cli-watcher"),
        metadata=(("authorization", f"Bearer {BRIDGE_TOKEN}"),),
    )
    try:
        first = next(stream)
        tables: list[subprocess.CompletedProcess[str]] = []

        def listed_watcher() -> bool:
            tables.append(aibridge(proc, "subscribers"))
            assert tables[-1].returncode == 0, tables[-1].stderr
            return "cli-watcher" in tables[-1].stdout

        asyncio.run(eventually(listed_watcher, 10, 0.2))
        header, *rows = tables[-1].stdout.splitlines()
        assert header.split()[:4] == ["NODE", "ROLE", "PEER", "REPLICA"]
        (row,) = [r for r in rows if r.startswith("cli-watcher")]
        assert row.split()[1] == "bridge"
        listed = ok_json(aibridge(proc, "subscribers", "--json"))
        assert isinstance(listed, list)
        (entry,) = [s for s in listed if s["node_id"] == "cli-watcher"]
        assert entry["role"] == "bridge"
        assert entry["version_sent"] == first.snapshot.version
        denied = aibridge(proc, "subscribers", token=BRIDGE_TOKEN)
        assert denied.returncode == 1 and "permission denied" in denied.stderr
    finally:
        stream.cancel()
        channel.close()


def test_update_says_disabled_when_it_disables(proc: Proc) -> None:
    """`providers update --disable` reports the provider disabled, and `--enable` enabled."""
    created = aibridge(proc, "providers", "create", "toggle", "--type", "openai", "--key", KEY_A)
    assert created.returncode == 0, created.stderr
    disabled = aibridge(proc, "providers", "update", "toggle", "--disable")
    assert disabled.returncode == 0, disabled.stderr
    assert "updated provider toggle (disabled)" in disabled.stderr
    enabled = aibridge(proc, "providers", "update", "toggle", "--enable", "--base-url", "http://x/")
    assert "updated provider toggle (base_url, enabled)" in enabled.stderr
