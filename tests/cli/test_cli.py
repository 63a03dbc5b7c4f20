"""The `aibridge` command line as a user runs it: real processes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from aibridge.cli import COMMANDS, prepare_environment
from aibridge.commands.subscribers import print_table
from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.masking import sha256_hex
from config_service.db.engine import make_engine
from config_service.db.models import AuditEntry, Principal, Token, utcnow
from tests.fixtures.processes import AIBRIDGE, popen
from tests.fixtures.services import (
    ADMIN_TOKEN,
    BRIDGE_TOKEN,
    PROXY_TOKEN,
    StartProcess,
)


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith(("AIBRIDGE_", "CODER_"))}
    full.update(env or {})
    return subprocess.run(
        [AIBRIDGE, *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_help_lists_every_command() -> None:
    """`aibridge --help` lists every sub-command."""
    result = run("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command: str) -> None:
    """Every sub-command answers --help with exit 0."""
    args = [command, "--help"]
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_the_config_service_gets_grpcs_ph2_server_transport_unless_the_operator_chose() -> None:
    """Only `config-service` gets GRPC_EXPERIMENTS=ph2_server, and an operator's value is kept."""
    chosen: dict[str, str] = {}
    prepare_environment("config-service", chosen)
    assert chosen == {"GRPC_EXPERIMENTS": "ph2_server"}
    operator = {"GRPC_EXPERIMENTS": "-ph2_server"}
    prepare_environment("config-service", operator)
    assert operator == {"GRPC_EXPERIMENTS": "-ph2_server"}
    other: dict[str, str] = {}
    prepare_environment("bridge", other)
    assert other == {}


def test_unknown_command_fails_with_usage() -> None:
    """An unknown sub-command exits 2 and shows the usage."""
    result = run("frobnicate")
    assert result.returncode == 2
    assert "unknown command" in result.stderr


def test_invalid_settings_are_all_reported_at_once(tmp_path: Path) -> None:
    """Several bad settings and a bad provider env fail start-up with one list naming each."""
    result = run(
        "config-service",
        env={
            "AIBRIDGE_DATA_DIR": str(tmp_path),
            "AIBRIDGE_GRPC_LISTEN": "nope",
            "AIBRIDGE_ENCRYPTION_KEYS": "not-base64!",
            "AIBRIDGE_ALLOW_BYOK": "maybe",
            "AIBRIDGE_PROVIDER_1_TYPE": "openai",
        },
    )
    assert result.returncode == 2
    for needle in (
        "AIBRIDGE_GRPC_LISTEN",
        "AIBRIDGE_ENCRYPTION_KEYS",
        "AIBRIDGE_ALLOW_BYOK",
        "AIBRIDGE_PROVIDER_0",
    ):
        assert needle in result.stderr


def test_flags_override_the_environment(tmp_path: Path) -> None:
    """A flag wins over its environment variable."""
    result = run(
        "config-service",
        "--grpc-listen",
        "bad-flag-value",
        env={"AIBRIDGE_DATA_DIR": str(tmp_path), "AIBRIDGE_GRPC_LISTEN": "127.0.0.1:0"},
    )
    assert result.returncode == 2
    assert "bad-flag-value" in result.stderr


def test_migrate_creates_and_then_reports_up_to_date(database_url: str) -> None:
    """`aibridge migrate` migrates an empty database, and a second run says it is up to date."""
    env = {"AIBRIDGE_DATABASE_URL": database_url}
    first = run("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "migrated" in first.stderr
    second = run("migrate", env=env)
    assert "up to date" in second.stderr


def local_token(database_url: str, role: str, name: str) -> subprocess.CompletedProcess[str]:
    """`aibridge tokens create --local` against the database at `database_url`."""
    argv = ["tokens", "create", "--local", "--role", role, "--name", name]
    return run(*argv, env={"AIBRIDGE_DATABASE_URL": database_url})


def test_local_token_create_prints_only_the_secret_on_stdout(database_url: str) -> None:
    """`tokens create --local` prints the secret alone on stdout and the details on stderr."""
    result = local_token(database_url, "member", "alice")
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip()
    assert secret.startswith("aib_") and len(secret) >= 40 and "\n" not in secret
    assert "member" in result.stderr and secret not in result.stderr
    listed = run("tokens", "list", "--local", "--json", env={"AIBRIDGE_DATABASE_URL": database_url})
    tokens = json.loads(listed.stdout)
    assert [t["principal_name"] for t in tokens] == ["alice"]
    assert secret not in listed.stdout


def test_token_made_locally_works_against_a_running_service(
    start_process: StartProcess, database_url: str
) -> None:
    """A token created with --local while the service runs authenticates at once."""
    proc = start_process()
    made = run(
        "tokens",
        "create",
        "--local",
        "--role",
        "auditor",
        "--name",
        "eve",
        env={"AIBRIDGE_DATABASE_URL": database_url},
    )
    result = run(
        "snapshot",
        env={"AIBRIDGE_CONFIG_SERVICE": proc.target, "AIBRIDGE_TOKEN": made.stdout.strip()},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["scope"] == "SNAPSHOT_SCOPE_METADATA"


def test_snapshot_with_the_proxy_token_has_no_keys(start_process: StartProcess) -> None:
    """`aibridge snapshot` with the proxy token prints providers without key material."""
    key = "sk-cli-secret-0123456789abcdefgh"
    proc = start_process(AIBRIDGE_OPENAI_KEY=key)
    result = run(
        "snapshot", env={"AIBRIDGE_CONFIG_SERVICE": proc.target, "AIBRIDGE_TOKEN": PROXY_TOKEN}
    )
    assert result.returncode == 0, result.stderr
    snapshot = json.loads(result.stdout)
    assert snapshot["providers"][0]["name"] == "openai"
    assert key not in result.stdout and "keys" not in snapshot["providers"][0]


def test_snapshot_explains_an_unreachable_service() -> None:
    """`aibridge snapshot` against a closed port says the service cannot be reached."""
    result = run(
        "snapshot",
        env={"AIBRIDGE_CONFIG_SERVICE": "127.0.0.1:1", "AIBRIDGE_TOKEN": "whatever-token-value"},
    )
    assert result.returncode == 1
    assert "cannot reach the config service" in result.stderr


def test_seed_conflict_fails_start_up_naming_the_provider(
    start_process: StartProcess, database_url: str, tmp_path: Path
) -> None:
    """A restart whose env drifted from the database exits non-zero naming the provider."""
    proc = start_process(AIBRIDGE_OPENAI_KEY="sk-aaaaaaaaaaaaaaaaaaaa")
    proc.stop()
    child = popen(
        ["config-service"],
        {
            "AIBRIDGE_DATABASE_URL": database_url,
            "AIBRIDGE_DATA_DIR": str(tmp_path),
            "AIBRIDGE_GRPC_LISTEN": "127.0.0.1:0",
            "AIBRIDGE_OPENAI_KEY": "sk-aaaaaaaaaaaaaaaaaaaa",
            "AIBRIDGE_OPENAI_BASE_URL": "https://elsewhere.example/v1/",
        },
    )
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 1
    assert "'openai'" in stderr and "aibridge providers update openai" in stderr


@pytest.mark.parametrize(
    ("command", "setting"),
    [
        ("config-service", "AIBRIDGE_GRPC_LISTEN"),
        ("bridge", "AIBRIDGE_BRIDGE_LISTEN"),
        ("proxy", "AIBRIDGE_PROXY_LISTEN"),
    ],
)
def test_a_taken_port_is_one_line_naming_it_and_its_setting(
    command: str, setting: str, tmp_path: Path
) -> None:
    """A daemon whose port is taken exits 2 with one line naming address and setting, before other work."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        address = f"127.0.0.1:{held.getsockname()[1]}"
        result = run(
            command,
            env={
                setting: address,
                "AIBRIDGE_DATA_DIR": str(tmp_path / "data"),
                "AIBRIDGE_CONFIG_SERVICE": "127.0.0.1:1",
                "AIBRIDGE_BRIDGE_TOKEN": BRIDGE_TOKEN,
                "AIBRIDGE_PROXY_TOKEN": PROXY_TOKEN,
                "AIBRIDGE_OPENAI_KEY": "sk-test-0123456789abcdef",
                "AIBRIDGE_LOG_FORMAT": "json",
            },
        )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"aibridge {command}: cannot listen on {address} ({setting}): address already in use; "
        f"stop what uses it or set {setting} to another host:port"
    ]
    # Nothing was migrated, seeded or generated first.
    assert not (tmp_path / "data" / "aibridge.db").exists()
    assert not (tmp_path / "data" / "proxy-ca.pem").exists()


@pytest.mark.parametrize("where", ["grpc", "local"])
def test_revoked_tokens_are_listed_marked_and_revoking_again_says_so(
    where: str, start_process: StartProcess, database_url: str
) -> None:
    """`tokens list` shows a revoked token marked revoked; revoking it again exits 1 saying it already was."""
    proc = start_process()
    env = {"AIBRIDGE_DATABASE_URL": database_url}
    if where == "grpc":
        env |= {"AIBRIDGE_CONFIG_SERVICE": proc.target, "AIBRIDGE_TOKEN": ADMIN_TOKEN}
    local = ["--local"] if where == "local" else []
    made = run("tokens", "create", *local, "--role", "member", "--name", "bob", env=env)
    assert made.returncode == 0, made.stderr
    (bob,) = [
        t
        for t in json.loads(run("tokens", "list", *local, "--json", env=env).stdout)
        if t["principal_name"] == "bob"
    ]
    first = run("tokens", "revoke", *local, bob["id"], env=env)
    assert first.returncode == 0, first.stderr
    listed = run("tokens", "list", *local, env=env)
    (row,) = [line for line in listed.stdout.splitlines() if bob["id"] in line]
    assert re.search(r"  revoked \d{4}-\d\d-\d\dT", row)
    active = run("tokens", "list", *local, "--active", env=env)
    assert bob["id"] not in active.stdout
    again = run("tokens", "revoke", *local, bob["id"], env=env)
    assert again.returncode == 1
    assert f"token {bob['id']} (bob) was already revoked at " in again.stderr
    assert "nothing changed" in again.stderr


@pytest.mark.parametrize(
    ("value", "target"),
    [
        ("localhost", "localhost:7443"),
        ("10.0.0.5", "10.0.0.5:7443"),
        ("[::1]", "[::1]:7443"),
        ("cs.internal:9000", "cs.internal:9000"),
        ("dns:///cs.internal:7443", "dns:///cs.internal:7443"),
    ],
)
def test_a_config_service_address_without_a_port_means_7443(value: str, target: str) -> None:
    """AIBRIDGE_CONFIG_SERVICE without a port targets 7443, not gRPC's 443, for CLI, bridge and proxy."""
    from aibridge.client import ClientSettings
    from data_plane.bridge.settings import BridgeSettings
    from data_plane.proxy.settings import ProxySettings

    env = {
        "AIBRIDGE_CONFIG_SERVICE": value,
        "AIBRIDGE_BRIDGE_TOKEN": BRIDGE_TOKEN,
        "AIBRIDGE_PROXY_TOKEN": PROXY_TOKEN,
    }
    assert ClientSettings.from_env(env).target == target
    assert BridgeSettings.from_env(env).config_service == target
    assert ProxySettings.from_env(env).config_service == target


def test_snapshot_watch_into_a_closed_pipe_stops_quietly(start_process: StartProcess) -> None:
    """`snapshot --watch | head -1`: once the reader is gone the next snapshot ends it, rc 0, no traceback."""
    proc = start_process()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIBRIDGE_", "CODER_"))}
    env |= {"AIBRIDGE_CONFIG_SERVICE": proc.target, "AIBRIDGE_TOKEN": ADMIN_TOKEN}
    watch = subprocess.Popen(
        [AIBRIDGE, "snapshot", "--watch"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watch.stdout is not None and watch.stderr is not None
        assert json.loads(watch.stdout.readline())["version"]
        watch.stdout.close()  # what `head -1` does after its line
        created = run(
            "providers",
            "create",
            "piped",
            "--type",
            "openai",
            "--key",
            "sk-piped-0123456789abcdef",
            env={"AIBRIDGE_CONFIG_SERVICE": proc.target, "AIBRIDGE_TOKEN": ADMIN_TOKEN},
        )
        assert created.returncode == 0, created.stderr
        assert watch.wait(30) == 0
        stderr = watch.stderr.read()
        assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
        if watch.stderr is not None:
            watch.stderr.close()


@pytest.mark.parametrize(
    ("command", "wanted"),
    [
        (["migrate"], {"--database-url", "--data-dir", "--log-level"}),
        (["rotate-keys"], {"--database-url", "--encryption-keys"}),
        (["tokens", "list"], {"--database-url", "--config-service", "--token"}),
    ],
)
def test_database_commands_offer_only_the_flags_they_read(
    command: list[str], wanted: set[str]
) -> None:
    """`migrate --help` (and rotate-keys, tokens) lists no serving flags such as --grpc-listen."""
    result = run(*command, "--help")
    assert result.returncode == 0
    flags = set(re.findall(r"--[a-z-]+", result.stdout))
    assert wanted <= flags
    serving = {"--grpc-listen", "--admin-token", "--bridge-token", "--metrics-listen"}
    serving |= {"--grpc-tls-cert-file", "--allow-byok", "--replica-id", "--resync-interval"}
    assert not flags & serving, flags & serving


def test_restart_with_a_changed_seed_key_logs_that_the_stored_key_is_kept(
    start_process: StartProcess,
) -> None:
    """A config service restarted with another AIBRIDGE_OPENAI_KEY warns that it keeps the stored key."""
    first = start_process(AIBRIDGE_OPENAI_KEY="sk-first-0123456789abcdef")
    first.stop()
    second = start_process(AIBRIDGE_OPENAI_KEY="sk-second-0123456789abcdef")
    records = [json.loads(line) for line in second.lines if line.startswith("{")]
    kept = [r for r in records if "stored keys are kept" in r["event"]]
    assert len(kept) == 1 and kept[0]["level"] == "warning"
    assert "aibridge providers keys add openai" in kept[0]["event"]
    assert not [r for r in records if "deprecated" in r["event"]]
    assert "sk-second" not in "".join(second.lines)


def test_owner_cannot_mint_a_bridge_token_through_the_cli(start_process: StartProcess) -> None:
    """`tokens create --role bridge` with the owner token is refused, pointing at the two allowed paths."""
    proc = start_process()
    result = run(
        "tokens",
        "create",
        "--role",
        "bridge",
        "--name",
        "sneaky",
        env={"AIBRIDGE_CONFIG_SERVICE": proc.target, "AIBRIDGE_TOKEN": ADMIN_TOKEN},
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "PERMISSION_DENIED" in result.stderr or "permission" in result.stderr.lower()
    assert "AIBRIDGE_BRIDGE_TOKEN" in result.stderr and "--local" in result.stderr


def test_local_bridge_token_is_audited_as_the_local_user(database_url: str) -> None:
    """`tokens create --local --role bridge` works and its audit row names the local user, not an API caller."""
    result = local_token(database_url, "bridge", "bridge-2")
    assert result.returncode == 0, result.stderr
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            actors = conn.execute(
                select(AuditEntry.actor_name).where(AuditEntry.action == "token.create")
            ).scalars()
            assert [a.split("@")[0].startswith("local:") for a in actors] == [True]
    finally:
        engine.dispose()


def test_weak_bootstrap_token_stops_start_up(tmp_path: Path) -> None:
    """A weak AIBRIDGE_ADMIN_TOKEN makes `config-service` exit 2 with one line naming it and how to generate one."""
    weak = "correcthorse2024"
    result = run(
        "config-service",
        env={"AIBRIDGE_DATA_DIR": str(tmp_path), "AIBRIDGE_ADMIN_TOKEN": weak},
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if "AIBRIDGE_ADMIN_TOKEN" in line]
    assert len(lines) == 1 and "too weak" in lines[0]
    assert "openssl rand -base64 32" in lines[0]
    assert weak not in result.stderr


HOSTILE_NAME = "mallory\n\x1b[31mroot\u202e"  # a row written before the service checked names


def test_tokens_list_escapes_control_characters(
    start_process: StartProcess, database_url: str
) -> None:
    """`tokens list` (API and --local) shows a stored principal name's newline, ESC and bidi override escaped, one row per token."""
    proc = start_process()
    engine = make_engine(database_url)
    with Session(engine) as session, session.begin():
        principal = Principal(name=HOSTILE_NAME, role="member", created_at=utcnow())
        session.add(principal)
        session.flush()
        token = Token(
            principal_id=principal.id,
            token_hash=sha256_hex("hostile"),
            hint="aib_host",
            created_at=utcnow(),
        )
        session.add(token)
        session.flush()
        token_id = token.id
    engine.dispose()
    remote = {"AIBRIDGE_CONFIG_SERVICE": proc.target, "AIBRIDGE_TOKEN": ADMIN_TOKEN}
    for args, env in (([], remote), (["--local"], {"AIBRIDGE_DATABASE_URL": database_url})):
        listed = run("tokens", "list", *args, env=env)
        assert listed.returncode == 0, listed.stderr
        assert "\x1b" not in listed.stdout and "\u202e" not in listed.stdout
        lines = listed.stdout.splitlines()
        assert len(lines) == 1 + 4, lines  # header, three bootstrap tokens, the hostile one
        (row,) = [line for line in lines if "mallory" in line]
        assert "mallory\\n\\x1b[31mroot\\u202e" in row and row.startswith(token_id)


def test_subscribers_table_escapes_server_text(capsys: pytest.CaptureFixture[str]) -> None:
    """`aibridge subscribers` prints a NACK's multi-line message and ESC sequences escaped, on one line each."""
    subscriber = cs.Subscriber(
        node_id="bridge-1",
        version_rejected="7",
        errors=[cs.ProviderError(provider_name="alpha", message="line one\nline two\x1b[2J")],
        error_detail="Traceback\n  boom",
    )
    print_table([subscriber])
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "  bridge-1: alpha: line one\\nline two\\x1b[2J\n" in out
    assert "  bridge-1: Traceback\\n  boom\n" in out
    assert len(out.splitlines()) == 2 + 2  # header and row, then the two detail lines
