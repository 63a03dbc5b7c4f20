"""`aibridge tokens create|list|revoke`.

Over gRPC by default (AIBRIDGE_CONFIG_SERVICE with an owner token). With --local the
command works directly against the database (AIBRIDGE_DATABASE_URL / AIBRIDGE_DATA_DIR):
that is how the first tokens are made before anyone can call the API, and the only way
besides AIBRIDGE_BRIDGE/PROXY_TOKEN to make a bridge or proxy token (the API refuses:
a bridge token reads every plaintext provider key). A --local change is audited as
`local:<user>@<host>`.
`create` prints the new secret alone on standard output, the details on standard error,
so scripts can capture it: TOKEN=$(aibridge tokens create --role member --name alice).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

import grpc

from aibridge.client import CLIENT, client_from_args, describe_rpc_error
from aibridge.config.v1 import token_admin_service_pb2 as pb
from aibridge.config.v1 import token_admin_service_pb2_grpc as pb_grpc
from aibridge.config.v1 import token_pb2
from aibridge.envconfig import SettingsError
from aibridge.terminal import escape, table
from config_service.errors import ConfigError
from config_service.rbac import Role, Subject

if TYPE_CHECKING:
    from config_service.store.tokens import TokenView

ROLES = [r.value for r in Role]


def _parser(prog: str) -> argparse.ArgumentParser:
    from config_service.commands.common import DATABASE_SETTINGS

    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create a token; prints the secret once")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", help="principal name (default: the role)")
    lst = sub.add_parser("list", help="list tokens, revoked ones marked (never their secrets)")
    lst.add_argument("--active", action="store_true", help="hide revoked tokens")
    # Revoked tokens are listed by default now; the old flag still parses.
    lst.add_argument("--include-revoked", action="store_true", help=argparse.SUPPRESS)
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    revoke = sub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id")
    for s in (create, lst, revoke):
        s.add_argument(
            "--local", action="store_true", help="use the database directly instead of the gRPC API"
        )
        (CLIENT + DATABASE_SETTINGS).add_flags(s)
    return p


def _print_tokens(tokens: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(tokens, indent=2))
        return
    if not tokens:
        print("(no tokens)", file=sys.stderr)
        return
    rows = [
        [
            t["id"],
            t["role"],
            t["principal_name"],
            f"{t['hint']}...",
            f"revoked {t['revoked_at']}" if t.get("revoked_at") else "active",
        ]
        for t in tokens
    ]
    print(table(["ID", "ROLE", "PRINCIPAL", "HINT", "STATUS"], rows))


def _already_revoked(token: dict[str, Any]) -> str:
    """The message for revoking a token that is revoked already (nothing is changed)."""
    return (
        f"token {token['id']} ({token['principal_name']}) was already revoked at "
        f"{token['revoked_at']}; nothing changed"
    )


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


def _local_subject() -> Subject:
    """Who acts with --local: the service's own authority, audited as the OS user and host."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        user = f"uid{os.getuid()}"
    return Subject(principal_id="local", name=f"local:{user}@{socket.gethostname()}", role=None)


def _local(args: argparse.Namespace) -> int:
    from aibridge import logs
    from config_service.crypto import Cipher
    from config_service.db import migrate
    from config_service.db.engine import make_engine
    from config_service.settings import SETTINGS, ConfigServiceSettings
    from config_service.store import tokens
    from config_service.store.database import Database

    settings = ConfigServiceSettings.from_env(os.environ, SETTINGS.given(args))
    logs.configure("warning", settings.log_format)
    db = Database(make_engine(settings.database_url), Cipher(settings.encryption_keys))
    subject = _local_subject()
    try:
        migrate.upgrade(db.engine)
        if args.action == "create":
            view, secret = tokens.create_token(db, subject, args.name or args.role, Role(args.role))
            print(
                f"created {view.role} token {view.id} for {view.principal_name!r} "
                "(shown once; store it now)",
                file=sys.stderr,
            )
            print(secret)
        elif args.action == "list":
            views = tokens.list_tokens(db, subject, not args.active)
            _print_tokens([_view_dict(v) for v in views], args.json)
        else:
            listed = {v.id: v for v in tokens.list_tokens(db, subject, True)}
            if args.id in listed and listed[args.id].revoked_at is not None:
                print(
                    f"aibridge tokens: {_already_revoked(_view_dict(listed[args.id]))}",
                    file=sys.stderr,
                )
                return 1
            view = tokens.revoke_token(db, subject, args.id)
            print(f"revoked token {view.id} ({escape(view.principal_name)})", file=sys.stderr)
    finally:
        db.engine.dispose()
    return 0


def _view_dict(v: TokenView) -> dict[str, Any]:
    return {
        "id": v.id,
        "role": v.role.value,
        "principal_name": v.principal_name,
        "hint": v.hint,
        "created_at": _iso(v.created_at),
        "revoked_at": _iso(v.revoked_at),
    }


def _token_dict(t: token_pb2.Token) -> dict[str, Any]:
    return {
        "id": t.id,
        "role": token_pb2.Role.Name(t.role).removeprefix("ROLE_").lower(),
        "principal_name": t.principal_name,
        "hint": t.hint,
        "created_at": t.created_at.ToDatetime().isoformat() if t.HasField("created_at") else "",
        "revoked_at": t.revoked_at.ToDatetime().isoformat() if t.HasField("revoked_at") else "",
    }


def _remote(args: argparse.Namespace) -> int:
    client = client_from_args(args, "aibridge tokens")
    if client is None:
        print("aibridge tokens: (or use --local against the database)", file=sys.stderr)
        return 2
    with client.channel() as channel:
        stub = pb_grpc.TokenAdminServiceStub(channel)
        md = client.metadata()
        try:
            if args.action == "create":
                role = token_pb2.Role.Value(f"ROLE_{args.role.upper()}")
                created = stub.CreateToken(
                    pb.CreateTokenRequest(principal_name=args.name or args.role, role=role),
                    metadata=md,
                    timeout=30,
                )
                print(
                    f"created {args.role} token {created.token.id} for "
                    f"{created.token.principal_name!r} (shown once; store it now)",
                    file=sys.stderr,
                )
                print(created.secret)
            elif args.action == "list":
                listed = stub.ListTokens(
                    pb.ListTokensRequest(include_revoked=not args.active),
                    metadata=md,
                    timeout=30,
                )
                _print_tokens([_token_dict(t) for t in listed.tokens], args.json)
            else:
                # RevokeToken on a revoked token changes nothing and says so only in
                # revoked_at; look first, so the user hears that nothing happened.
                every = stub.ListTokens(
                    pb.ListTokensRequest(include_revoked=True), metadata=md, timeout=30
                )
                known = {t.id: t for t in every.tokens}
                if args.id in known and known[args.id].HasField("revoked_at"):
                    message = _already_revoked(_token_dict(known[args.id]))
                    print(f"aibridge tokens: {message}", file=sys.stderr)
                    return 1
                revoked = stub.RevokeToken(
                    pb.RevokeTokenRequest(id=args.id), metadata=md, timeout=30
                )
                print(
                    f"revoked token {revoked.token.id} ({escape(revoked.token.principal_name)})",
                    file=sys.stderr,
                )
        except grpc.RpcError as exc:
            print(f"aibridge tokens: {describe_rpc_error(exc, client.target)}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str], prog: str = "aibridge tokens") -> int:
    from config_service.commands.common import failed

    args = _parser(prog).parse_args(argv)
    try:
        return _local(args) if args.local else _remote(args)
    except (SettingsError, ConfigError) as exc:
        return failed("aibridge tokens", exc)
