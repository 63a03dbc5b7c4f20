"""`aibridge usage`: who used which model, how many tokens, through which client, what failed.

  aibridge usage list [--since 7d] [--until 1h] [--user PRINCIPAL_ID] [--provider NAME]
        [--model MODEL] [--client CLIENT] [--outcome OUTCOME] [--limit N]
  aibridge usage show ID
  aibridge usage summary --by user,model [--since 7d] [filters as for list]

Durations are like 90s, 30m, 24h or 7d (ago); --since/--until also take an ISO time
(2026-01-31T12:00:00Z). Owners and auditors see every record, members only their own;
prompts and tool arguments only owners and auditors. --by takes any of user, provider,
model, client, day, hour. Output is a table by default, JSON with --json.
Exit codes: 0 done, 1 the config service refused or could not be reached, 2 usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from aibridge.client import ClientSettings, UsageError, admin_flags, admin_parser, run_admin
from aibridge.config.v1 import usage_pb2
from aibridge.config.v1 import usage_service_pb2 as pb
from aibridge.config.v1 import usage_service_pb2_grpc as pb_grpc
from aibridge.envconfig import seconds
from aibridge.recording import TOKEN_KINDS, enum_names
from aibridge.rulebook import type_name
from aibridge.terminal import escape, table

PROG = "aibridge usage"
TIMEOUT = 30.0
PAGE = 1000


OUTCOME_NAMES = enum_names(usage_pb2.Outcome, "OUTCOME_")
OUTCOMES = {name: value for value, name in OUTCOME_NAMES.items()}
DIMENSIONS = {
    name: value for value, name in enum_names(pb.UsageDimension, "USAGE_DIMENSION_").items()
}
DIMENSIONS["user"] = DIMENSIONS["principal"]
CREDENTIAL_NAMES = enum_names(usage_pb2.CredentialKind, "CREDENTIAL_KIND_")


def parse_when(value: str, now: datetime | None = None) -> datetime:
    """'7d' (that long ago) or an ISO time (UTC unless it says otherwise)."""
    with contextlib.suppress(ValueError):
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds(value))
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{value!r}: expected a duration such as 24h or 7d, or an ISO time"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def parse_by(value: str) -> list[int]:
    dimensions = []
    for part in (p.strip() for p in value.split(",") if p.strip()):
        if part not in DIMENSIONS:
            raise UsageError(f"--by {part!r}: expected any of {', '.join(sorted(DIMENSIONS))}")
        dimensions.append(DIMENSIONS[part])
    return dimensions


def _common(p: argparse.ArgumentParser, filters: bool = True) -> argparse.ArgumentParser:
    if filters:
        p.add_argument("--since", help="records started since: 24h, 7d or an ISO time")
        p.add_argument("--until", help="records started before: a duration ago or an ISO time")
        p.add_argument("--user", default="", metavar="PRINCIPAL_ID", help="one principal")
        p.add_argument("--provider", default="", help="provider name")
        p.add_argument("--model", default="", help="requested or served model")
        p.add_argument("--client", default="", help="client, e.g. claude-code, codex, other")
        p.add_argument("--outcome", choices=sorted(OUTCOMES))
    return admin_flags(p)


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = admin_parser(prog, __doc__)
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _common(sub.add_parser("list", help="interception records, newest first"))
    listing.add_argument("--limit", type=int, default=100, help="at most N records (100)")
    show = _common(sub.add_parser("show", help="one record with its tool calls"), filters=False)
    show.add_argument("id", metavar="ID")
    summary = _common(sub.add_parser("summary", help="requests, failures and tokens, grouped"))
    summary.add_argument("--by", default="", help="comma-separated: user,provider,model,...")
    return p


def usage_filter(args: argparse.Namespace) -> pb.InterceptionFilter:
    f = pb.InterceptionFilter(
        principal_id=args.user, provider_name=args.provider, model=args.model, client=args.client
    )
    if args.outcome:
        f.outcome = OUTCOMES[args.outcome]  # type: ignore[assignment]
    if args.since:
        f.start_time.FromDatetime(parse_when(args.since))
    if args.until:
        f.end_time.FromDatetime(parse_when(args.until))
    return f


# ----------------------------------------------------------------------------- output


def _ts(message: Any, field: str) -> str:
    if not message.HasField(field):
        return ""
    return str(getattr(message, field).ToDatetime().replace(microsecond=0).isoformat()) + "Z"


def _millis(i: usage_pb2.Interception) -> str:
    ended = i.ended_at.ToNanoseconds() - i.started_at.ToNanoseconds()
    return f"{ended / 1e6:.0f}"


def interception_dict(i: usage_pb2.Interception) -> dict[str, Any]:
    data = MessageToDict(
        i, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    data["provider_type"] = type_name(i.provider_type)
    data["outcome"] = OUTCOME_NAMES.get(i.outcome, "")
    data["credential_kind"] = CREDENTIAL_NAMES.get(i.credential_kind, "")
    data["usage"] = {kind: getattr(i.usage, kind) for kind in TOKEN_KINDS}
    return data


def counts_dict(c: pb.UsageCounts) -> dict[str, int]:
    return {
        "requests": c.requests,
        "failures": c.failures,
        "cancelled": c.cancelled,
        **{kind: getattr(c.usage, kind) for kind in TOKEN_KINDS},
    }


def print_list(records: Sequence[usage_pb2.Interception]) -> None:
    if not records:
        print("(no interception records)", file=sys.stderr)
        return
    headers = ["STARTED", "ID", "USER", "PROVIDER", "MODEL", "CLIENT", "OUTCOME", "STATUS"]
    headers += ["IN", "OUT", "MS"]
    rows = [
        [
            _ts(i, "started_at"),
            i.id,
            i.principal_name or i.principal_id or "-",
            i.provider_name,
            i.requested_model or i.served_model,
            i.client or "-",
            OUTCOME_NAMES.get(i.outcome, "?"),
            str(i.status_code or "-"),
            str(i.usage.input_tokens),
            str(i.usage.output_tokens),
            _millis(i),
        ]
        for i in records
    ]
    print(table(headers, rows))


def print_one(i: usage_pb2.Interception) -> None:
    credential = CREDENTIAL_NAMES.get(i.credential_kind, "-")
    rows = [
        ("id", i.id),
        ("started", _ts(i, "started_at")),
        ("first byte", _ts(i, "first_byte_at") or "-"),
        ("ended", _ts(i, "ended_at")),
        ("user", f"{i.principal_name} ({i.principal_id})" if i.principal_id else "-"),
        ("provider", i.provider_name),
        ("route", i.route),
        ("model", f"{i.requested_model} -> {i.served_model or '?'}"),
        ("outcome", f"{OUTCOME_NAMES.get(i.outcome, '?')} ({i.status_code or '-'})"),
        ("client", f"{i.client or '-'} ({i.user_agent})" if i.user_agent else i.client or "-"),
        ("session", i.session_id or "-"),
        ("credential", f"{credential} {i.credential_hint}".strip()),
        ("attempts", str(i.attempts)),
        ("proxied", "yes" if i.proxied else "no"),
        ("streamed", "yes" if i.streamed else "no"),
        *((kind.removesuffix("_tokens"), str(getattr(i.usage, kind))) for kind in TOKEN_KINDS),
    ]
    for label, value in rows:
        print(f"{label + ':':<14}{escape(value)}")
    for call in i.tool_calls:
        print(f"tool call:    {escape(call.name)} {escape(call.call_id)}")
        if call.arguments:
            print(f"  arguments:  {escape(call.arguments)}")
    if i.prompt:
        print(f"prompt:       {escape(i.prompt)}")


def print_summary(response: pb.SummarizeUsageResponse, by: Sequence[int]) -> None:
    keys: list[tuple[str, Callable[[pb.UsageGroup], str]]] = []
    for d in by:
        if d == pb.USAGE_DIMENSION_PRINCIPAL:
            keys.append(("USER", lambda g: g.principal_name or g.principal_id or "-"))
        elif d == pb.USAGE_DIMENSION_PROVIDER:
            keys.append(("PROVIDER", lambda g: g.provider_name or "-"))
        elif d == pb.USAGE_DIMENSION_MODEL:
            keys.append(("MODEL", lambda g: g.model or "-"))
        elif d == pb.USAGE_DIMENSION_CLIENT:
            keys.append(("CLIENT", lambda g: g.client or "-"))
        else:
            keys.append(("PERIOD", lambda g: _ts(g, "period_start")))
    counts = ["REQUESTS", "FAILURES", "CANCELLED", "IN", "OUT", "CACHE READ", "CACHE WRITE"]
    counts += ["REASONING"]

    def numbers(c: pb.UsageCounts) -> list[str]:
        values = [c.requests, c.failures, c.cancelled]
        return [str(v) for v in values + [getattr(c.usage, kind) for kind in TOKEN_KINDS]]

    rows = [[fn(g) for _, fn in keys] + numbers(g.counts) for g in response.groups]
    label = ["TOTAL"] + [""] * (len(keys) - 1) if keys else []
    rows.append(label + numbers(response.total))
    print(table([name for name, _ in keys] + counts, rows))


# ----------------------------------------------------------------------------- calls


def _list(stub: pb_grpc.UsageServiceStub, args: argparse.Namespace, md: Any) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    records: list[usage_pb2.Interception] = []
    token = ""
    while len(records) < args.limit:
        response = stub.ListInterceptions(
            pb.ListInterceptionsRequest(
                filter=usage_filter(args),
                page_size=min(PAGE, args.limit - len(records)),
                page_token=token,
            ),
            metadata=md,
            timeout=TIMEOUT,
        )
        records.extend(response.interceptions)
        token = response.next_page_token
        if not token:
            break
    if args.json:
        print(json.dumps([interception_dict(i) for i in records], indent=2, ensure_ascii=False))
    else:
        print_list(records)
    return 0


def _show(stub: pb_grpc.UsageServiceStub, args: argparse.Namespace, md: Any) -> int:
    response = stub.GetInterception(
        pb.GetInterceptionRequest(id=args.id), metadata=md, timeout=TIMEOUT
    )
    if args.json:
        print(json.dumps(interception_dict(response.interception), indent=2, ensure_ascii=False))
    else:
        print_one(response.interception)
    return 0


def _summary(stub: pb_grpc.UsageServiceStub, args: argparse.Namespace, md: Any) -> int:
    by = parse_by(args.by)
    response = stub.SummarizeUsage(
        pb.SummarizeUsageRequest(filter=usage_filter(args), group_by=by),  # type: ignore[arg-type]
        metadata=md,
        timeout=TIMEOUT,
    )
    if args.json:
        groups = []
        for g in response.groups:
            data = MessageToDict(g, preserving_proto_field_name=True)
            data["counts"] = counts_dict(g.counts)
            groups.append(data)
        print(json.dumps({"groups": groups, "total": counts_dict(response.total)}, indent=2))
    else:
        print_summary(response, by)
    return 0


ACTIONS = {"list": _list, "show": _show, "summary": _summary}


def main(argv: list[str], prog: str = PROG) -> int:
    args = parser(prog).parse_args(argv)

    def run(client: ClientSettings, channel: grpc.Channel) -> int:
        return ACTIONS[args.action](pb_grpc.UsageServiceStub(channel), args, client.metadata())

    return run_admin(prog, args, run)
