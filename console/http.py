"""A small ASGI request/response layer and router: just what the console's pages need.

No framework: the console serves a dozen server-rendered pages, a few form posts and
static files. `Request` is read whole (bodies are capped), `Response` is sent whole.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs

MAX_BODY = 256 * 1024  # a form post: a provider with five keys fits many times over
MAX_FIELDS = 100

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyTooLarge(Exception):
    """The request body is over MAX_BODY."""


class BadForm(Exception):
    """The form body cannot be read (too many fields, not UTF-8)."""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    cookies: dict[str, str]
    scheme: str
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    async def read(cls, scope: Scope, receive: Receive) -> Request:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        cookies: dict[str, str] = {}
        if "cookie" in headers:
            jar: SimpleCookie = SimpleCookie()
            with contextlib.suppress(Exception):  # an unreadable cookie header is no cookie
                jar.load(headers["cookie"])
            cookies = {k: m.value for k, m in jar.items()}
        body = b""
        if scope["method"] == "POST":
            more = True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > MAX_BODY:
                    raise BodyTooLarge
        return cls(
            method=scope["method"],
            path=scope["path"],
            query=first_values(scope.get("query_string", b"").decode("latin-1")),
            headers=headers,
            cookies=cookies,
            scheme=scope.get("scheme", "http"),
            body=body,
        )

    def form(self) -> dict[str, list[str]]:
        """The urlencoded form body: every value of every field, blanks kept."""
        try:
            text = self.body.decode("utf-8")
            return parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadForm(str(exc)) from None


def one(form: dict[str, list[str]], name: str) -> str:
    """The first value of a form field; empty when the field is absent."""
    return form.get(name, [""])[0]


def first_values(query: str) -> dict[str, str]:
    try:
        parsed = parse_qs(query, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        return {}
    return {k: v[0] for k, v in parsed.items()}


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    async def send(self, send: Send) -> None:
        headers = [(b"content-type", self.content_type.encode())]
        headers.append((b"content-length", str(len(self.body)).encode()))
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def redirect(location: str, status: int = 303) -> Response:
    """See-other after a post (never a URL from the request: `location` is ours)."""
    return Response(status, b"", "text/plain; charset=utf-8", [("location", location)])


C = TypeVar("C")
_PARAM = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Route(Generic[C]):
    method: str
    pattern: re.Pattern[str]
    handler: Callable[[C], Awaitable[Response]]
    public: bool  # served without a session (sign-in, static files)


class Router(Generic[C]):
    """Routes "METHOD /path/{param}" to handlers; a parameter is one path segment."""

    def __init__(self) -> None:
        self.routes: list[Route[C]] = []

    def add(
        self,
        method: str,
        path: str,
        handler: Callable[[C], Awaitable[Response]],
        public: bool = False,
    ) -> None:
        parts = _PARAM.split(path)  # literal, name, literal, name, ..., literal
        regex = "".join(
            re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts)
        )
        self.routes.append(Route(method, re.compile(f"^{regex}\\Z"), handler, public))

    def match(self, method: str, path: str) -> tuple[Route[C] | None, dict[str, str], list[str]]:
        """(route, path parameters, methods the path allows): route None when none matched."""
        allowed: list[str] = []
        for route in self.routes:
            found = route.pattern.match(path)
            if found:
                if route.method == method:
                    return route, found.groupdict(), []
                allowed.append(route.method)
        return None, {}, allowed
