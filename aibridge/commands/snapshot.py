"""`aibridge snapshot`: print the current provider snapshot as JSON.

What it shows depends on the token's role: masked keys for owner/auditor tokens,
no key material for the proxy token, plaintext keys only with the bridge token.
`--watch` keeps the stream open and prints every new snapshot (one JSON per line).
"""

from __future__ import annotations

import sys

import grpc
from google.protobuf.json_format import MessageToJson

from aibridge.client import CLIENT, admin_parser, client_from_args, describe_rpc_error
from aibridge.config.v1 import config_service_pb2 as pb
from aibridge.config.v1 import config_service_pb2_grpc as pb_grpc
from aibridge.envconfig import process_id


def main(argv: list[str], prog: str = "aibridge snapshot") -> int:
    p = admin_parser(prog, __doc__)
    p.add_argument("--watch", action="store_true", help="stream every new snapshot")
    p.add_argument("--known-version", default="", help="with --watch: skip this version")
    CLIENT.add_flags(p)
    args = p.parse_args(argv)
    client = client_from_args(args, prog)
    if client is None:
        return 2
    with client.channel() as channel:
        stub = pb_grpc.ConfigServiceStub(channel)
        try:
            if not args.watch:
                response = stub.GetProviderSnapshot(
                    pb.GetProviderSnapshotRequest(), metadata=client.metadata(), timeout=30
                )
                print(MessageToJson(response.snapshot, indent=2))
                return 0
            request = pb.WatchProvidersRequest(
                node_id=f"cli-{process_id()}",
                known_version=args.known_version,
            )
            for item in stub.WatchProviders(request, metadata=client.metadata()):
                print(MessageToJson(item.snapshot, indent=None), flush=True)
        except grpc.RpcError as exc:
            print(f"aibridge snapshot: {describe_rpc_error(exc, client.target)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
    return 0
