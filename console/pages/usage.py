"""Usage: requests and tokens over time and by provider, model, user and client (charts
from SummarizeUsage), failures by cause, recent interceptions with filters, one record.

The config service scopes every answer to the caller: a member sees only its own
records, prompts and tool arguments reach owners and auditors only. The chart data goes
into the page as JSON (a non-executable script element, escaped by `tojson`) for
static/usage.js; the same figures are in tables for readers without JavaScript.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aibridge.config.v1 import usage_pb2
from aibridge.config.v1 import usage_service_pb2 as us
from aibridge.recording import CLIENT_RE, MAX_NAME
from console.app import Ctx
from console.filters import OUTCOMES
from console.http import Response, Router

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}
WINDOWS["30d"] = timedelta(days=30)
DEFAULT_WINDOW = "24h"
FAILURE_CAUSES = (
    usage_pb2.OUTCOME_UPSTREAM_ERROR,
    usage_pb2.OUTCOME_GATEWAY_ERROR,
    usage_pb2.OUTCOME_REFUSED_BREAKER,
    usage_pb2.OUTCOME_REFUSED_POOL,
    usage_pb2.OUTCOME_CANCELLED,
)
OUTCOME_VALUES = {name: value for value, name in OUTCOMES.items()}
PAGE_SIZE = 50
FILTERS = ("window", "provider", "model", "user", "client", "outcome", "split")
# What the over-time charts are split by: the query's `split`, and the summary dimension.
SPLITS = {
    "provider": us.USAGE_DIMENSION_PROVIDER,
    "model": us.USAGE_DIMENSION_MODEL,
    "user": us.USAGE_DIMENSION_PRINCIPAL,
    "client": us.USAGE_DIMENSION_CLIENT,
}
GROUP_FIELD = {"provider": "provider_name", "model": "model", "client": "client"}
MAX_SERIES = 8  # series drawn over time; the rest are added up as "(other)"


def register(router: Router[Ctx]) -> None:
    router.add("GET", "/usage", page)
    router.add("GET", "/usage/{record_id}", detail)


def read_filters(query: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The filters of the query string, cleaned; every problem named."""
    problems: list[str] = []
    given = {k: query.get(k, "").strip() for k in FILTERS}
    if given["window"] not in WINDOWS:
        if given["window"]:
            problems.append("window: choose 1h, 24h, 7d or 30d")
        given["window"] = DEFAULT_WINDOW
    for name in ("provider", "model", "user"):
        if len(given[name]) > MAX_NAME or not given[name].isprintable():
            problems.append(f"{name}: at most {MAX_NAME} printable characters")
            given[name] = ""
    if given["client"] and not CLIENT_RE.match(given["client"]):
        problems.append("client: a client slug such as claude-code or openai-python")
        given["client"] = ""
    if given["split"] not in SPLITS:
        if given["split"]:
            problems.append("split: choose " + ", ".join(SPLITS))
        given["split"] = "provider"
    if given["outcome"] and given["outcome"] not in OUTCOME_VALUES:
        problems.append("outcome: " + ", ".join(OUTCOME_VALUES))
        given["outcome"] = ""
    return given, problems


def to_filter(given: dict[str, str], now: datetime) -> us.InterceptionFilter:
    f = us.InterceptionFilter(
        provider_name=given["provider"],
        model=given["model"],
        principal_id=given["user"],
        client=given["client"],
        outcome=OUTCOME_VALUES.get(given["outcome"], 0),  # type: ignore[arg-type]
    )
    f.start_time.FromDatetime(now - WINDOWS[given["window"]])
    return f


def tokens_of(counts: us.UsageCounts) -> int:
    return counts.usage.input_tokens + counts.usage.output_tokens


def label_of(g: us.UsageGroup, split: str) -> str:
    """How a group is named on the charts: the user's name (or id), else the dimension."""
    if split == "user":
        return g.principal_name or g.principal_id or "(none)"
    return str(getattr(g, GROUP_FIELD[split])) or "(none)"


def series(
    response: us.SummarizeUsageResponse,
    split: str,
    start: datetime,
    step: timedelta,
    now: datetime,
) -> dict[str, Any]:
    """Requests and tokens per period and `split` value, every period present (zeros filled);
    past MAX_SERIES values, the smallest are added up as "(other)"."""
    periods: list[datetime] = []
    at = start.replace(minute=0, second=0, microsecond=0)
    if step >= timedelta(days=1):
        at = at.replace(hour=0)
    while at <= now:
        periods.append(at)
        at += step
    index = {p: i for i, p in enumerate(periods)}
    totals: dict[str, int] = {}
    for g in response.groups:
        name = label_of(g, split)
        totals[name] = totals.get(name, 0) + g.counts.requests
    kept = set(sorted(totals, key=lambda n: (-totals[n], n))[:MAX_SERIES])
    lines: dict[str, dict[str, list[int]]] = {}
    for g in response.groups:
        when = g.period_start.ToDatetime(tzinfo=UTC)
        if when not in index:
            continue
        name = label_of(g, split)
        row = lines.setdefault(
            name if name in kept else "(other)",
            {"requests": [0] * len(periods), "tokens": [0] * len(periods)},
        )
        row["requests"][index[when]] += g.counts.requests
        row["tokens"][index[when]] += tokens_of(g.counts)
    label = "%m-%d" if step >= timedelta(days=1) else "%m-%d %H:00"
    return {
        "labels": [p.strftime(label) for p in periods],
        "series": [{"name": name, **values} for name, values in sorted(lines.items())],
    }


def ranked(response: us.SummarizeUsageResponse, split: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for g in response.groups:
        rows.append(
            {
                "label": label_of(g, split),
                "requests": g.counts.requests,
                "failures": g.counts.failures,
                "tokens": tokens_of(g.counts),
            }
        )
    rows.sort(key=lambda r: (-int(r["requests"]), str(r["label"])))
    return rows[:20]


async def _summaries(
    ctx: Ctx, flt: us.InterceptionFilter, period: us.UsageDimension.ValueType, split: str
) -> list[Any]:
    """Over time, by model, user, client and provider, the page's listing, then one total
    per failure cause: every call of the page at once."""
    stub = ctx.stubs.usage

    def summary(*by: us.UsageDimension.ValueType) -> Any:
        request = us.SummarizeUsageRequest(filter=flt, group_by=list(by))
        return ctx.call(stub.SummarizeUsage, request)

    def failures(outcome: int) -> Any:
        only = us.InterceptionFilter()
        only.CopyFrom(flt)
        only.outcome = outcome  # type: ignore[assignment]
        return ctx.call(stub.SummarizeUsage, us.SummarizeUsageRequest(filter=only))

    listing = us.ListInterceptionsRequest(
        filter=flt, page_size=PAGE_SIZE, page_token=ctx.request.query.get("page", "")[:512]
    )
    return list(
        await asyncio.gather(
            summary(period, SPLITS[split]),
            summary(us.USAGE_DIMENSION_MODEL),
            summary(us.USAGE_DIMENSION_PRINCIPAL),
            summary(us.USAGE_DIMENSION_CLIENT),
            summary(us.USAGE_DIMENSION_PROVIDER),
            ctx.call(stub.ListInterceptions, listing),
            *(failures(o) for o in FAILURE_CAUSES),
        )
    )


def _next_link(given: dict[str, str], token: str) -> str:
    """The next page's URL with the filters that differ from the defaults; "" on the last."""
    if not token:
        return ""
    defaults = {"window": DEFAULT_WINDOW, "split": "provider"}
    kept = {k: v for k, v in given.items() if v and defaults.get(k) != v}
    return "/usage?" + urlencode({**kept, "page": token})


async def page(ctx: Ctx) -> Response:
    given, problems = read_filters(ctx.request.query)
    now = datetime.now(UTC)
    flt = to_filter(given, now)
    step = timedelta(days=1) if WINDOWS[given["window"]] > timedelta(days=2) else timedelta(hours=1)
    period = us.USAGE_DIMENSION_DAY if step >= timedelta(days=1) else us.USAGE_DIMENSION_HOUR
    results = await _summaries(ctx, flt, period, given["split"])
    over_time, by_model, by_user, by_client, by_provider, listed = results[:6]
    causes = [
        {"label": OUTCOMES[o], "requests": r.total.requests}
        for o, r in zip(FAILURE_CAUSES, results[6:], strict=True)
    ]
    charts = {
        "over_time": series(over_time, given["split"], now - WINDOWS[given["window"]], step, now),
        "by_model": ranked(by_model, "model"),
        "by_user": ranked(by_user, "user"),
        "by_client": ranked(by_client, "client"),
        "by_provider": ranked(by_provider, "provider"),
        "failures": causes,
    }
    return ctx.render(
        "usage.html",
        filters=given,
        problems=problems,
        windows=list(WINDOWS),
        splits=list(SPLITS),
        outcomes=list(OUTCOME_VALUES),
        total=over_time.total,
        charts=charts,
        records=listed.interceptions,
        next_link=_next_link(given, listed.next_page_token),
        first_page=not ctx.request.query.get("page"),
        member=ctx.me.role == "member",
    )


async def detail(ctx: Ctx) -> Response:
    got = await ctx.call(
        ctx.stubs.usage.GetInterception, us.GetInterceptionRequest(id=ctx.params["record_id"])
    )
    return ctx.render("usage_detail.html", r=got.interception, member=ctx.me.role == "member")
