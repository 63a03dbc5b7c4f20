"""Tokens: list (revoked ones marked), create (the secret shown once), revoke.

A created secret is rendered in the answer to the post itself — never stored by the
console, never put in a URL or a redirect — and the page is not cached.
"""

from __future__ import annotations

from aibridge.config.v1 import token_admin_service_pb2 as ta
from aibridge.config.v1 import token_pb2
from console.api import Conflict, FieldError
from console.app import Ctx
from console.http import Response, Router, one, redirect

# Roles a console user may mint: daemon tokens are never minted over the API.
MINTABLE = {
    "member": token_pb2.ROLE_MEMBER,
    "auditor": token_pb2.ROLE_AUDITOR,
    "owner": token_pb2.ROLE_OWNER,
}


def register(router: Router[Ctx]) -> None:
    router.add("GET", "/tokens", page)
    router.add("POST", "/tokens", create)
    router.add("POST", "/tokens/{token_id}/revoke", revoke)


async def _page(
    ctx: Ctx,
    status: int = 200,
    created: ta.CreateTokenResponse | None = None,
    error: str = "",
    values: dict[str, str] | None = None,
) -> Response:
    listed = await ctx.call(ctx.stubs.tokens.ListTokens, ta.ListTokensRequest(include_revoked=True))
    tokens = sorted(
        listed.tokens, key=lambda t: (t.revoked_at.seconds != 0, -t.created_at.seconds, t.id)
    )
    notice = "Token revoked." if ctx.request.query.get("notice") == "revoked" else ""
    return ctx.render(
        "tokens.html",
        status,
        tokens=tokens,
        created=created,
        error=error,
        values=values or {"role": "member"},
        roles=list(MINTABLE),
        csrf=ctx.me.csrf,
        notice=notice,
        own_token_id=ctx.me.token_id,
    )


async def page(ctx: Ctx) -> Response:
    return await _page(ctx)


async def create(ctx: Ctx) -> Response:
    form = ctx.form()
    name = one(form, "principal_name").strip()
    role = one(form, "role")
    values = {"principal_name": name, "role": role}
    if role not in MINTABLE:
        return await _page(ctx, 400, error="role: choose member, auditor or owner", values=values)
    if not name:
        return await _page(ctx, 400, error="principal_name: is required", values=values)
    try:
        created = await ctx.call(
            ctx.stubs.tokens.CreateToken,
            ta.CreateTokenRequest(principal_name=name, role=MINTABLE[role]),
        )
    except (FieldError, Conflict) as exc:
        return await _page(ctx, exc.status, error=exc.message, values=values)
    return await _page(ctx, 200, created=created)


async def revoke(ctx: Ctx) -> Response:
    await ctx.call(ctx.stubs.tokens.RevokeToken, ta.RevokeTokenRequest(id=ctx.params["token_id"]))
    return redirect("/tokens?notice=revoked")
