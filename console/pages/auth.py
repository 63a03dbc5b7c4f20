"""Sign-in with a gateway token, sign-out, and the start page.

The token is checked by the config service (TokenAdminService.WhoAmI): the console
holds no list of tokens. Daemon tokens (bridge, proxy) cannot sign in: they are
machine credentials, and the console has nothing for them. The sign-in form has its
own CSRF value, bound to a short-lived SameSite=Strict cookie (no session exists yet).
"""

from __future__ import annotations

import hmac
import secrets

from aibridge.config.v1 import token_admin_service_pb2 as ta
from console.api import SignedOut, Unavailable
from console.app import Ctx, Refused, log, same_site
from console.filters import ROLES
from console.http import Response, Router, one, redirect
from console.sessions import COOKIE, PRE_COOKIE, cookie_header

CONSOLE_ROLES = ("owner", "auditor", "member")
PRE_TTL = 3600
MAX_TOKEN = 4096


def register(router: Router[Ctx]) -> None:
    router.add("GET", "/", home)
    router.add("GET", "/signin", signin_form, public=True)
    router.add("POST", "/signin", signin, public=True)
    router.add("POST", "/signout", signout)


async def home(ctx: Ctx) -> Response:
    return redirect("/usage" if ctx.me.role == "member" else "/providers")


def _form(ctx: Ctx, status: int = 200, error: str = "") -> Response:
    value = secrets.token_urlsafe(32)
    secure = ctx.request.scheme == "https"
    ctx.extra_headers.append(("set-cookie", cookie_header(PRE_COOKIE, value, PRE_TTL, secure)))
    expired = ctx.request.query.get("expired") == "1" and not error
    return ctx.render("signin.html", status, csrf=value, error=error, expired=expired)


async def signin_form(ctx: Ctx) -> Response:
    if ctx.session is not None:
        return redirect("/")
    return _form(ctx)


async def signin(ctx: Ctx) -> Response:
    form = ctx.form()
    expected = ctx.request.cookies.get(PRE_COOKIE, "")
    given = one(form, "csrf")
    if (
        not same_site(ctx.request)
        or not expected
        or not hmac.compare_digest(expected.encode(), given.encode())
    ):
        raise Refused(403, "refused: the sign-in form's security token is missing or stale")
    token = one(form, "token").strip()
    if not token:
        return _form(ctx, 400, "Paste a gateway token.")
    if len(token) > MAX_TOKEN or not token.isprintable():
        return _form(ctx, 401, "That token was not accepted.")
    api = ctx.console.api
    try:
        me = await api.call(token, api.stubs.tokens.WhoAmI, ta.WhoAmIRequest())
    except SignedOut:
        return _form(ctx, 401, "That token was not accepted (unknown or revoked).")
    except Unavailable as exc:
        return _form(ctx, 503, exc.message)
    role = ROLES.get(me.role, "unknown")
    if role not in CONSOLE_ROLES:
        return _form(
            ctx, 403, f"A {role} token is a daemon credential and cannot sign in to the console."
        )
    if ctx.session is not None:  # a new sign-in never keeps the old session id
        ctx.console.sessions.end(ctx.session.id)
    session = ctx.console.sessions.create(
        token, me.principal_id, me.principal_name, role, me.token_id
    )
    secure = ctx.request.scheme == "https"
    ttl = int(ctx.console.sessions.ttl)
    response = redirect("/")
    response.headers.append(("set-cookie", cookie_header(COOKIE, session.id, ttl, secure)))
    response.headers.append(("set-cookie", cookie_header(PRE_COOKIE, "", 0, secure)))
    log.info("console sign-in", principal=me.principal_name, role=role)
    return response


async def signout(ctx: Ctx) -> Response:
    ctx.console.sessions.end(ctx.me.id)
    response = redirect("/signin")
    secure = ctx.request.scheme == "https"
    response.headers.append(("set-cookie", cookie_header(COOKIE, "", 0, secure)))
    return response
