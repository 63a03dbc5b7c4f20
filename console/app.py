"""The console's ASGI application: sessions, CSRF, security headers, errors, rendering.

Every response carries a strict Content-Security-Policy (scripts and styles only from
/static, no inline code), frame-ancestors 'none' and X-Frame-Options DENY; pages are
never cached. Every POST needs the session's CSRF token (the sign-in form its own
cookie-bound one) and is refused when the browser says it came from another site.
A page whose call the config service refuses renders that refusal: 403 for
PERMISSION_DENIED, the sign-in page when the token is no longer accepted.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar

import jinja2

from aibridge.asgi import lifespan
from aibridge.logs import get_logger
from console import filters
from console.api import Api, ApiError, SignedOut, Stubs
from console.http import (
    BadForm,
    BodyTooLarge,
    Receive,
    Request,
    Response,
    Router,
    Scope,
    Send,
    one,
    redirect,
)
from console.sessions import COOKIE, Session, SessionStore, cookie_header

log = get_logger("aibridge.console")
T = TypeVar("T")

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS = (
    ("content-security-policy", CSP),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    # same-origin, not no-referrer: with no-referrer Chromium sends "Origin: null" on our own
    # form posts, and the origin check needs the real one. Other sites get no referrer.
    ("referrer-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
)
STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


class Refused(Exception):
    """A request the console itself refuses (bad CSRF token, cross-site post, bad form)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Ctx:
    """One request as a page handler sees it."""

    console: Console
    request: Request
    session: Session | None
    extra_headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def me(self) -> Session:
        assert self.session is not None, "a page route is only reached with a session"
        return self.session

    def session_name(self) -> str:
        return self.session.principal_name if self.session else ""

    @property
    def params(self) -> dict[str, str]:
        return self.request.params

    def form(self) -> dict[str, list[str]]:
        try:
            return self.request.form()
        except BadForm:
            raise Refused(400, "the form could not be read") from None

    async def call(self, method: Callable[..., T], request: Any) -> T:
        return await self.console.api.call(self.me.token, method, request)

    @property
    def stubs(self) -> Stubs:
        return self.console.api.stubs

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        return self.console.render(self, template, status, **context)


class Console:
    """The ASGI app. `api` reaches the config service; `sessions` holds who is signed in."""

    def __init__(self, api: Api, session_ttl: float) -> None:
        self.api = api
        self.sessions = SessionStore(session_ttl)
        self.router: Router[Ctx] = Router()
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        filters.install(self.templates)
        self._static: dict[str, bytes] = {}
        from console.pages import auth, providers, subscribers, tokens, usage

        for module in (auth, providers, subscribers, usage, tokens):
            module.register(self.router)
        self.router.add("GET", "/static/{name}", self.static, public=True)

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send, self.api.close)
            return
        if scope["type"] != "http":
            return
        try:
            request = await Request.read(scope, receive)
        except BodyTooLarge:
            await self._plain(413, "request body too large").send(send)
            return
        response = await self.handle(request)
        response.headers += SECURITY_HEADERS
        if request.scheme == "https":
            response.headers.append(("strict-transport-security", "max-age=31536000"))
        if not request.path.startswith("/static/"):
            response.headers.append(("cache-control", "no-store"))
        await response.send(send)

    async def handle(self, request: Request) -> Response:
        route, params, allowed = self.router.match(request.method, request.path)
        session = self.sessions.get(request.cookies.get(COOKIE))
        ctx = Ctx(self, request, session)
        if route is None:
            if allowed:
                return self._plain(405, "method not allowed", [("allow", ", ".join(allowed))])
            return self.error_page(ctx, 404, "No such page.")
        request.params = params
        try:
            if not route.public:
                if session is None:
                    if request.method == "GET":
                        return redirect("/signin")
                    raise Refused(403, "not signed in (or the session expired): sign in again")
                if request.method == "POST":
                    check_post(ctx)
            response = await route.handler(ctx)
        except Refused as exc:
            return self.error_page(ctx, exc.status, exc.message)
        except SignedOut:
            if session is not None:
                self.sessions.end_token(session.token)
            log.info("console session ended: token refused", principal=ctx.session_name())
            response = redirect("/signin?expired=1")
            secure = request.scheme == "https"
            response.headers.append(("set-cookie", cookie_header(COOKIE, "", 0, secure)))
            return response
        except ApiError as exc:
            return self.error_page(ctx, exc.status, exc.message)
        except Exception as exc:
            # A bug: logged with its traceback under a reference; the page shows only that.
            ref = uuid.uuid4().hex[:12]
            log.error("console page failed", ref=ref, path=request.path, exc_info=exc)
            return self.error_page(ctx, 500, f"internal error (reference {ref})")
        response.headers += ctx.extra_headers
        return response

    # ------------------------------------------------------------------ rendering

    def render(self, ctx: Ctx, template: str, status: int = 200, **context: Any) -> Response:
        page = self.templates.get_template(template).render(
            session=ctx.session, path=ctx.request.path, **context
        )
        return Response(status, page.encode())

    def error_page(self, ctx: Ctx, status: int, message: str) -> Response:
        return self.render(ctx, "error.html", status, code=status, message=message)

    @staticmethod
    def _plain(status: int, text: str, headers: list[tuple[str, str]] | None = None) -> Response:
        return Response(status, text.encode(), "text/plain; charset=utf-8", headers or [])

    async def static(self, ctx: Ctx) -> Response:
        name = ctx.params["name"]
        suffix = name[name.rfind(".") :] if "." in name else ""
        folder = resources.files("console") / "static"
        if "/" in name or suffix not in STATIC_TYPES or not folder.joinpath(name).is_file():
            return self._plain(404, "not found")
        if name not in self._static:
            self._static[name] = folder.joinpath(name).read_bytes()
        return Response(
            200,
            self._static[name],
            STATIC_TYPES[suffix],
            [("cache-control", "public, max-age=3600")],
        )


def same_site(request: Request) -> bool:
    """False when the browser says the request came from another site or origin."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:  # browsers send it on every cross-site post; tools may not
        return True
    return origin == f"{request.scheme}://{request.headers.get('host', '')}"


def check_post(ctx: Ctx) -> None:
    """Refuse a post without this session's CSRF token, or sent from another site."""
    if not same_site(ctx.request):
        raise Refused(403, "refused: the form was posted from another site")
    given = one(ctx.form(), "csrf")
    if not ctx.me.csrf_ok(given):
        raise Refused(403, "refused: the form's security token is missing or stale; reload it")
