"""Subscribers: every node following the snapshot stream, and whether it is up to date.

Like `istioctl proxy-status`: a node whose acknowledged version is not the current
snapshot's stands out (behind, or rejected with its errors). The page polls its own
rows fragment every second (static/live.js), so a change shows as it propagates.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aibridge.config.v1 import config_service_pb2 as cs
from console.app import Ctx
from console.http import Response, Router


@dataclass(frozen=True)
class Row:
    node: cs.Subscriber
    state: str  # current, behind, rejected, pending


MAX_ROWS = 1000  # rows rendered (every second); the rest are counted, out-of-date ones first


def state_of(node: cs.Subscriber, current: str) -> str:
    if node.version_rejected and node.version_rejected == node.version_sent:
        return "rejected"
    if node.version_acked == current:
        return "current"
    if not node.version_acked:
        return "pending"
    return "behind"


def register(router: Router[Ctx]) -> None:
    router.add("GET", "/subscribers", page)
    router.add("GET", "/subscribers/rows", rows)


async def _load(ctx: Ctx) -> dict[str, Any]:
    listed, snap = await asyncio.gather(
        ctx.call(ctx.stubs.config.ListSubscribers, cs.ListSubscribersRequest()),
        ctx.call(ctx.stubs.config.GetProviderSnapshot, cs.GetProviderSnapshotRequest()),
    )
    current = snap.snapshot.version
    ordered = sorted(listed.subscribers, key=lambda s: (s.node_id, s.replica_id, s.peer))
    table = [Row(s, state_of(s, current)) for s in ordered]
    out_of_date = sum(1 for r in table if r.state != "current")
    if len(table) > MAX_ROWS:
        table.sort(key=lambda r: r.state == "current")  # stable: by node within each group
    return {
        "rows": table[:MAX_ROWS],
        "version": current,
        "left_off": listed.subscribers_left_off + max(0, len(table) - MAX_ROWS),
        "out_of_date": out_of_date,
    }


async def page(ctx: Ctx) -> Response:
    return ctx.render("subscribers.html", **await _load(ctx))


async def rows(ctx: Ctx) -> Response:
    return ctx.render("subscribers_rows.html", **await _load(ctx))
