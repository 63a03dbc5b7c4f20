"""`aibridge providers`: manage providers through the config service's gRPC API.

  aibridge providers list
  aibridge providers get NAME
  aibridge providers create NAME --type TYPE [--display-name TEXT] [--base-url URL]
        [--key KEY ...] [--keys-from-env VAR ...] [--disabled]
        [--bedrock-region R] [--bedrock-model M] [--bedrock-small-fast-model M]
        [--bedrock-role-arn ARN] [--bedrock-access-key-env VAR --bedrock-access-key-secret-env VAR]
  aibridge providers update NAME [--display-name TEXT] [--base-url URL] [--enable | --disable]
        [--bedrock-... as for create]
  aibridge providers delete NAME
  aibridge providers keys list NAME
  aibridge providers keys add NAME [--from-env VAR]      (otherwise the key is read from stdin)
  aibridge providers keys remove NAME KEY_ID

NAME may also be a provider id. Writes need an owner token (AIBRIDGE_TOKEN or
AIBRIDGE_ADMIN_TOKEN); auditors may read. Keys are never shown, only masked hints, and
never need to be on the command line: name environment variables (--keys-from-env,
--from-env, --bedrock-access-key-env) or pipe the key into `keys add`. `keys add` and
`keys remove` change one key on the server (AddProviderKey / DeleteProviderKey), so
concurrent key changes never undo each other.
Output is a table by default, JSON with --json. Exit codes: 0 done, 1 the config
service refused or could not be reached, 2 usage.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.json_format import MessageToDict

from aibridge.client import ClientSettings, UsageError, admin_flags, admin_parser, run_admin
from aibridge.config.v1 import provider_admin_service_pb2 as pb
from aibridge.config.v1 import provider_admin_service_pb2_grpc as pb_grpc
from aibridge.config.v1 import provider_pb2
from aibridge.rulebook import TYPES, type_name
from aibridge.terminal import escape, table

PROG = "aibridge providers"
TIMEOUT = 30.0

STATUS_NAMES = {
    provider_pb2.PROVIDER_STATUS_ENABLED: "enabled",
    provider_pb2.PROVIDER_STATUS_DISABLED: "disabled",
    provider_pb2.PROVIDER_STATUS_ERROR: "error",
}
BEDROCK_FLAGS = ("region", "model", "small_fast_model", "role_arn")


# ----------------------------------------------------------------------------- parsing


def _add_bedrock_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Bedrock (types bedrock and anthropic)")
    g.add_argument("--bedrock-region", help="AWS region, e.g. us-east-1")
    g.add_argument("--bedrock-model", help="model id (default: the deployment default)")
    g.add_argument("--bedrock-small-fast-model", help="small/fast model id")
    g.add_argument("--bedrock-role-arn", help="IAM role to assume")
    g.add_argument(
        "--bedrock-access-key-env",
        metavar="VAR",
        help="environment variable holding the AWS access key id",
    )
    g.add_argument(
        "--bedrock-access-key-secret-env",
        metavar="VAR",
        help="environment variable holding the AWS secret access key",
    )


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = admin_parser(prog, __doc__)
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    admin_flags(sub.add_parser("list", help="list providers (disabled ones too)"))
    get = admin_flags(sub.add_parser("get", help="show one provider"))
    get.add_argument("name", metavar="NAME", help="provider name or id")

    create = admin_flags(sub.add_parser("create", help="create a provider"))
    create.add_argument("name", metavar="NAME")
    create.add_argument("--type", required=True, choices=sorted(TYPES))
    create.add_argument("--display-name", default="")
    create.add_argument("--base-url", default="", help="default: the type's default URL")
    create.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY",
        help="an API key (repeatable; prefer --keys-from-env: argv is visible)",
    )
    create.add_argument(
        "--keys-from-env",
        action="append",
        default=[],
        metavar="VAR",
        help="environment variable holding an API key (repeatable)",
    )
    create.add_argument("--disabled", action="store_true", help="create it disabled")
    _add_bedrock_flags(create)

    upd = admin_flags(sub.add_parser("update", help="change a provider (only the flags given)"))
    upd.add_argument("name", metavar="NAME", help="provider name or id")
    upd.add_argument("--display-name")
    upd.add_argument("--base-url", help="'' restores the type's default")
    state = upd.add_mutually_exclusive_group()
    state.add_argument("--enable", dest="enabled", action="store_true", default=None)
    state.add_argument("--disable", dest="enabled", action="store_false")
    _add_bedrock_flags(upd)

    delete = admin_flags(sub.add_parser("delete", help="delete a provider (its name becomes free)"))
    delete.add_argument("name", metavar="NAME", help="provider name or id")

    keys = sub.add_parser("keys", help="list, add or remove a provider's API keys")
    keys_sub = keys.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    klist = admin_flags(keys_sub.add_parser("list", help="list key ids and masked hints"))
    klist.add_argument("name", metavar="NAME")
    kadd = admin_flags(
        keys_sub.add_parser("add", help="add a key (read from standard input unless --from-env)")
    )
    kadd.add_argument("name", metavar="NAME")
    kadd.add_argument("--from-env", metavar="VAR", help="environment variable holding the key")
    kremove = admin_flags(keys_sub.add_parser("remove", help="remove a key by id"))
    kremove.add_argument("name", metavar="NAME")
    kremove.add_argument("key_id", metavar="KEY_ID")
    return p


def _env_secret(var: str, flag: str) -> str:
    value = os.environ.get(var, "")
    if not value:
        raise UsageError(f"{flag} {var}: the environment variable is not set or empty")
    return value


def _stdin_secret() -> str:
    if sys.stdin is None:
        raise UsageError("no key: pass --from-env VAR or pipe the key on standard input")
    interactive = sys.stdin.isatty()
    value = getpass.getpass("API key (input hidden): ") if interactive else sys.stdin.read()
    value = value.rstrip("\r\n")
    if not value:
        raise UsageError("no key on standard input (or use --from-env VAR)")
    if "\n" in value:
        raise UsageError("standard input holds several lines: pass exactly one key")
    return value


def _bedrock(args: argparse.Namespace) -> tuple[pb.BedrockSettingsInput, list[str]]:
    """The Bedrock settings given on the command line and their field-mask paths."""
    message = pb.BedrockSettingsInput()
    paths: list[str] = []
    for name in BEDROCK_FLAGS:
        value = getattr(args, f"bedrock_{name}")
        if value is not None:
            setattr(message, name, value)
            paths.append(f"bedrock.{name}")
    key_env, secret_env = args.bedrock_access_key_env, args.bedrock_access_key_secret_env
    if (key_env is None) != (secret_env is None):
        raise UsageError("--bedrock-access-key-env and --bedrock-access-key-secret-env go together")
    if key_env is not None:
        message.access_key = _env_secret(key_env, "--bedrock-access-key-env")
        message.access_key_secret = _env_secret(secret_env, "--bedrock-access-key-secret-env")
        paths += ["bedrock.access_key", "bedrock.access_key_secret"]
    return message, paths


# ----------------------------------------------------------------------------- output


def _ts(message: Any, field: str) -> str:
    if not message.HasField(field):
        return ""
    return str(getattr(message, field).ToDatetime().replace(microsecond=0).isoformat()) + "Z"


def _status(p: provider_pb2.Provider) -> str:
    status = STATUS_NAMES.get(p.status, "unknown")
    return f"{status}: {p.status_reason}" if p.status_reason else status


def provider_dict(p: provider_pb2.Provider) -> dict[str, Any]:
    data = MessageToDict(
        p, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    data["type"] = type_name(p.type)
    data["status"] = STATUS_NAMES.get(p.status, "unknown")
    for key in data.get("keys", []):
        key.pop("secret", None)
    if not p.HasField("bedrock"):
        data.pop("bedrock", None)
    return data


def key_dict(k: provider_pb2.ProviderKey) -> dict[str, str]:
    return {"id": k.id, "hint": k.hint, "created_at": _ts(k, "created_at")}


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _print_keys(keys: Sequence[provider_pb2.ProviderKey], indent: str = "") -> None:
    if not keys:
        print(f"{indent}(no keys)")
        return
    lines = table(["ID", "HINT", "CREATED"], [[k.id, k.hint, _ts(k, "created_at")] for k in keys])
    print("\n".join(indent + line for line in lines.splitlines()))


def print_provider(p: provider_pb2.Provider) -> None:
    rows = [
        ("name", p.name),
        ("id", p.id),
        ("display name", p.display_name),
        ("type", type_name(p.type)),
        ("base URL", p.base_url),
        ("status", _status(p)),
        ("created", _ts(p, "created_at")),
        ("updated", _ts(p, "updated_at")),
    ]
    if p.HasField("bedrock"):
        b = p.bedrock
        creds = f"static ({b.access_key_hint})" if b.has_static_credentials else "default chain"
        rows += [
            ("bedrock region", b.region),
            ("bedrock model", b.model),
            ("small/fast model", b.small_fast_model),
            ("role ARN", b.role_arn or "-"),
            ("credentials", creds),
        ]
    rows.append(("keys", str(p.key_count)))
    for label, value in rows:
        print(f"{label + ':':<18}{escape(value)}")
    if p.keys:
        _print_keys(p.keys, indent="  ")


def print_list(providers: Sequence[provider_pb2.Provider]) -> None:
    if not providers:
        print("(no providers)", file=sys.stderr)
        return
    print(
        table(
            ["NAME", "TYPE", "STATUS", "KEYS", "BASE URL"],
            [
                [
                    p.name,
                    type_name(p.type),
                    _status(p),
                    str(p.key_count),
                    p.base_url,
                ]
                for p in providers
            ],
        )
    )


# ----------------------------------------------------------------------------- actions


class Commands:
    def __init__(
        self,
        stub: pb_grpc.ProviderAdminServiceStub,
        client: ClientSettings,
        args: argparse.Namespace,
    ) -> None:
        self.stub = stub
        self.md = client.metadata()
        self.args = args

    def get(self, name: str) -> provider_pb2.Provider:
        response = self.stub.GetProvider(
            pb.GetProviderRequest(id_or_name=name), metadata=self.md, timeout=TIMEOUT
        )
        return response.provider

    def update(self, name: str, request: pb.UpdateProviderRequest) -> provider_pb2.Provider:
        request.id_or_name = name
        response = self.stub.UpdateProvider(request, metadata=self.md, timeout=TIMEOUT)
        return response.provider

    def show(self, provider: provider_pb2.Provider) -> None:
        if self.args.json:
            _print_json(provider_dict(provider))
        else:
            print_provider(provider)

    def run(self) -> int:
        args = self.args
        action = args.action if args.action != "keys" else f"keys {args.keys_action}"
        if action == "list":
            listed = self.stub.ListProviders(
                pb.ListProvidersRequest(), metadata=self.md, timeout=TIMEOUT
            )
            if args.json:
                _print_json([provider_dict(p) for p in listed.providers])
            else:
                print_list(listed.providers)
        elif action == "get":
            self.show(self.get(args.name))
        elif action == "create":
            self.create()
        elif action == "update":
            self.update_fields()
        elif action == "delete":
            self.stub.DeleteProvider(
                pb.DeleteProviderRequest(id_or_name=args.name), metadata=self.md, timeout=TIMEOUT
            )
            print(f"deleted provider {args.name}", file=sys.stderr)
            if args.json:
                _print_json({"deleted": args.name})
        elif action == "keys list":
            keys = self.get(args.name).keys
            if args.json:
                _print_json([key_dict(k) for k in keys])
            else:
                _print_keys(keys)
        elif action == "keys add":
            return self.add_key()
        else:
            return self.remove_key()
        return 0

    def create(self) -> None:
        args = self.args
        keys = list(args.key) + [_env_secret(v, "--keys-from-env") for v in args.keys_from_env]
        bedrock, bedrock_paths = _bedrock(args)
        request = pb.CreateProviderRequest(
            name=args.name,
            type=TYPES[args.type].wire,
            display_name=args.display_name,
            base_url=args.base_url,
            disabled=args.disabled,
            keys=keys,
        )
        if bedrock_paths:
            request.bedrock.CopyFrom(bedrock)
        response = self.stub.CreateProvider(request, metadata=self.md, timeout=TIMEOUT)
        print(f"created provider {response.provider.name}", file=sys.stderr)
        self.show(response.provider)

    def update_fields(self) -> None:
        args = self.args
        request = pb.UpdateProviderRequest()
        paths: list[str] = []
        if args.display_name is not None:
            request.display_name = args.display_name
            paths.append("display_name")
        if args.base_url is not None:
            request.base_url = args.base_url
            paths.append("base_url")
        if args.enabled is not None:
            request.enabled = args.enabled
            paths.append("enabled")
        bedrock, bedrock_paths = _bedrock(args)
        if bedrock_paths:
            request.bedrock.CopyFrom(bedrock)
            paths += bedrock_paths
        if not paths:
            raise UsageError("nothing to update: pass at least one of the update flags")
        request.update_mask.CopyFrom(FieldMask(paths=paths))
        provider = self.update(args.name, request)
        # The mask names the field; say what the flag did to it.
        state = "enabled" if args.enabled else "disabled"
        changed = ", ".join(state if p == "enabled" else p for p in paths)
        print(f"updated provider {provider.name} ({changed})", file=sys.stderr)
        self.show(provider)

    def add_key(self) -> int:
        args = self.args
        secret = _env_secret(args.from_env, "--from-env") if args.from_env else _stdin_secret()
        response = self.stub.AddProviderKey(
            pb.AddProviderKeyRequest(id_or_name=args.name, secret=secret),
            metadata=self.md,
            timeout=TIMEOUT,
        )
        provider, key = response.provider, response.key
        if args.json:
            _print_json(key_dict(key))
        else:
            print(
                f"added key {key.id} ({key.hint}) to {provider.name}; "
                f"{provider.key_count} key(s) in the pool"
            )
        return 0

    def remove_key(self) -> int:
        args = self.args
        response = self.stub.DeleteProviderKey(
            pb.DeleteProviderKeyRequest(id_or_name=args.name, key_id=args.key_id),
            metadata=self.md,
            timeout=TIMEOUT,
        )
        provider = response.provider
        print(
            f"removed key {args.key_id} from {provider.name}; {provider.key_count} key(s) left",
            file=sys.stderr,
        )
        if args.json:
            _print_json([key_dict(k) for k in provider.keys])
        return 0


def main(argv: list[str], prog: str = PROG) -> int:
    args = parser(prog).parse_args(argv)

    def run(client: ClientSettings, channel: grpc.Channel) -> int:
        return Commands(pb_grpc.ProviderAdminServiceStub(channel), client, args).run()

    return run_admin(prog, args, run)
