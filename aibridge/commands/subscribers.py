"""`aibridge subscribers`: who watches the provider snapshot, on which version.

Lists every WatchProviders stream the config service (this replica) holds: node id,
role, peer address, replica, connected since, and the versions sent, acknowledged
and rejected, with the errors of the last NACK. Needs an owner or auditor token.
Table by default, JSON with --json. Exit codes: 0 done, 1 RPC error, 2 usage.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from aibridge.client import ClientSettings, admin_flags, admin_parser, run_admin
from aibridge.config.v1 import config_service_pb2 as pb
from aibridge.config.v1 import config_service_pb2_grpc as pb_grpc
from aibridge.config.v1 import token_pb2
from aibridge.terminal import escape, table

PROG = "aibridge subscribers"
HEADERS = (
    "NODE",
    "ROLE",
    "PEER",
    "REPLICA",
    "CONNECTED SINCE",
    "SENT",
    "ACKED",
    "REJECTED",
    "ERRORS",
)


def _role(value: int) -> str:
    try:
        return token_pb2.Role.Name(value).removeprefix("ROLE_").lower()  # type: ignore[arg-type]
    except ValueError:
        return str(value)


def _ts(message: Any, field: str) -> str:
    if not message.HasField(field):
        return ""
    return str(getattr(message, field).ToDatetime().replace(microsecond=0).isoformat()) + "Z"


def subscriber_dict(s: pb.Subscriber) -> dict[str, Any]:
    data = MessageToDict(
        s, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    data["role"] = _role(s.role)
    return data


def print_table(subscribers: Sequence[pb.Subscriber]) -> None:
    if not subscribers:
        print("(no subscribers)", file=sys.stderr)
        return
    rows = [
        [
            s.node_id,
            _role(s.role),
            s.peer,
            s.replica_id,
            _ts(s, "connected_since"),
            s.version_sent or "-",
            s.version_acked or "-",
            s.version_rejected or "-",
            str(max(s.errors_total, len(s.errors))) + (" +detail" if s.error_detail else ""),
        ]
        for s in subscribers
    ]
    print(table(HEADERS, rows))
    for s in subscribers:
        for error in s.errors:
            print(f"  {escape(s.node_id)}: {escape(error.provider_name)}: {escape(error.message)}")
        if s.errors_total > len(s.errors):
            print(f"  {escape(s.node_id)}: ... {s.errors_total - len(s.errors)} more errors")
        if s.error_detail:
            print(f"  {escape(s.node_id)}: {escape(s.error_detail)}")


def main(argv: list[str], prog: str = PROG) -> int:
    args = admin_flags(admin_parser(prog, __doc__)).parse_args(argv)

    def show(client: ClientSettings, channel: grpc.Channel) -> int:
        response = pb_grpc.ConfigServiceStub(channel).ListSubscribers(
            pb.ListSubscribersRequest(), metadata=client.metadata(), timeout=30
        )
        if args.json:
            print(json.dumps([subscriber_dict(s) for s in response.subscribers], indent=2))
        else:
            print_table(response.subscribers)
        if response.subscribers_left_off:
            print(
                f"{prog}: {response.subscribers_left_off} more subscribers left off"
                " (the answer is bounded in size)",
                file=sys.stderr,
            )
        return 0

    return run_admin(prog, args, show)
