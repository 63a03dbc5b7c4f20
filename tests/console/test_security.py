"""Console security: no secret on any page, CSRF and cross-site posts refused, members kept
out of provider and token pages, tampered or expired sessions refused, strict headers."""

from __future__ import annotations

import time

import httpx

from aibridge.config.v1 import usage_pb2
from aibridge.config.v1 import usage_service_pb2 as us
from aibridge.config.v1 import usage_service_pb2_grpc as us_grpc
from aibridge.recording import new_record_id
from config_service.rbac import Role
from console.sessions import COOKIE, PRE_COOKIE
from tests.console.conftest import PROVIDER_KEY, Browserless, csrf_of

PAGES = (
    "/",
    "/providers",
    "/providers/new",
    "/providers/openai",
    "/subscribers",
    "/subscribers/rows",
    "/usage",
    "/tokens",
    "/signin",
    "/no-such-page",
)


def _secrets(console: Browserless) -> list[str]:
    return [PROVIDER_KEY, *console.service.tokens.values()]


async def _record(console: Browserless) -> str:
    record = usage_pb2.Interception(
        id=new_record_id(), provider_name="openai", outcome=usage_pb2.OUTCOME_COMPLETED
    )
    record.started_at.GetCurrentTime()
    record.ended_at.CopyFrom(record.started_at)
    await us_grpc.UsageServiceStub(console.service.channel()).RecordInterceptions(
        us.RecordInterceptionsRequest(interceptions=[record]),
        metadata=console.service.md_for(Role.BRIDGE),
    )
    return record.id


async def test_no_page_or_answer_contains_a_secret(console: Browserless) -> None:
    """Every page, for every role that may sign in, and the answers to bad posts hold no key or token."""
    record_id = await _record(console)
    secrets = _secrets(console)
    for role in (Role.OWNER, Role.AUDITOR, Role.MEMBER):
        client = await console.signed_in(role)
        for path in (*PAGES, f"/usage/{record_id}"):
            answer = await client.get(path)
            blob = answer.text + "".join(f"{k}: {v}" for k, v in answer.headers.items())
            for secret in secrets:
                assert secret not in blob, (role, path)
        csrf = await console.csrf(client)
        posts = {
            "/providers": {"name": "x y", "type": "openai", "keys": PROVIDER_KEY + "-new"},
            "/providers/openai/keys": {"secret": PROVIDER_KEY},  # a duplicate key
            "/tokens": {"principal_name": "", "role": "owner"},
        }
        for path, data in posts.items():
            answer = await client.post(path, data={"csrf": csrf, **data})
            for secret in (*secrets, PROVIDER_KEY + "-new"):
                assert secret not in answer.text, (role, path)


async def test_a_wrong_token_on_the_sign_in_page_is_not_echoed(console: Browserless) -> None:
    """A refused sign-in names no part of the token given."""
    client = console.client()
    form = await client.get("/signin")
    wrong = "aib_" + "w" * 40
    answer = await client.post("/signin", data={"csrf": csrf_of(form.text), "token": wrong})
    assert answer.status_code == 401 and wrong not in answer.text and "w" * 10 not in answer.text


async def test_a_forged_cross_site_post_is_refused(console: Browserless) -> None:
    """A post without the session's CSRF token, or from another origin or site, changes nothing."""
    client = await console.signed_in(Role.OWNER)
    csrf = await console.csrf(client)
    form = {"name": "forged", "type": "openai", "keys": "sk-forged-0123456789abcdef"}
    missing = await client.post("/providers", data=form)
    wrong = await client.post("/providers", data={**form, "csrf": csrf[:-2] + "xx"})
    other_origin = await client.post(
        "/providers", data={**form, "csrf": csrf}, headers={"origin": "https://evil.example"}
    )
    other_site = await client.post(
        "/providers", data={**form, "csrf": csrf}, headers={"sec-fetch-site": "cross-site"}
    )
    for answer in (missing, wrong, other_origin, other_site):
        assert answer.status_code == 403
    assert "forged" not in (await client.get("/providers")).text
    signout = await client.post("/signout", data={})
    assert signout.status_code == 403
    sign_in = console.client()
    forged_login = await sign_in.post(
        "/signin", data={"csrf": "guess", "token": console.service.tokens[Role.OWNER]}
    )
    assert forged_login.status_code == 403 and COOKIE not in forged_login.headers.get(
        "set-cookie", ""
    )


async def test_a_member_cannot_reach_provider_subscriber_or_token_pages(
    console: Browserless,
) -> None:
    """The config service's PERMISSION_DENIED becomes a clear 403 page for a member."""
    client = await console.signed_in(Role.MEMBER)
    for path in ("/providers", "/providers/new", "/providers/openai", "/tokens", "/subscribers"):
        answer = await client.get(path)
        assert answer.status_code == 403, path
        assert "Not allowed" in answer.text and "may not" in answer.text
    csrf = await console.csrf(client)
    for path, data in (
        ("/providers", {"name": "m", "type": "openai", "keys": "sk-member-0123456789abcd"}),
        ("/tokens", {"principal_name": "m", "role": "owner"}),
        ("/providers/openai/delete", {"confirm": "openai"}),
    ):
        assert (await client.post(path, data={"csrf": csrf, **data})).status_code == 403, path
    page = await client.get("/usage")
    assert 'href="/providers"' not in page.text and 'href="/tokens"' not in page.text


async def test_a_tampered_or_expired_session_cookie_is_refused(console: Browserless) -> None:
    """A cookie that is not a live session id reads as signed out; its posts are refused."""
    client = await console.signed_in(Role.OWNER)
    real = client.cookies[COOKIE]
    csrf = await console.csrf(client)
    for forged in (real[:-1] + ("A" if real[-1] != "A" else "B"), "", "x" * 43, real + "\x00"):
        other = console.client()
        other.cookies.set(COOKIE, forged)
        assert (await other.get("/providers")).headers.get("location") == "/signin"
        post = await other.post(
            "/tokens", data={"csrf": csrf, "principal_name": "t", "role": "owner"}
        )
        assert post.status_code == 403
    session = console.app.sessions.get(real)
    assert session is not None
    session.expires_at = time.monotonic() - 1
    assert (await client.get("/providers")).headers.get("location") == "/signin"


async def test_daemon_and_unknown_tokens_cannot_sign_in(console: Browserless) -> None:
    """Bridge and proxy tokens are refused with a clear reason, and so is an unknown token."""
    for token, status, words in (
        (console.service.tokens[Role.BRIDGE], 403, "daemon credential"),
        (console.service.tokens[Role.PROXY], 403, "daemon credential"),
        ("aib_unknown_token_0123456789abcdefghij", 401, "not accepted"),
        ("", 400, "Paste a gateway token"),
        ("bad\x00token", 401, "not accepted"),
    ):
        client = console.client()
        form = await client.get("/signin")
        answer = await client.post("/signin", data={"csrf": csrf_of(form.text), "token": token})
        assert answer.status_code == status and words in answer.text
        assert COOKIE not in client.cookies


async def test_every_answer_carries_a_strict_policy_and_the_cookie_is_locked_down(
    console: Browserless,
) -> None:
    """CSP without inline code, framing denied, pages not cached; the session cookie is HttpOnly, SameSite=Strict."""
    client = console.client()
    form = await client.get("/signin")
    csp = form.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert form.headers["x-frame-options"] == "DENY"
    assert form.headers["cache-control"] == "no-store"
    assert "<script>" not in form.text and " style=" not in form.text
    answer = await client.post(
        "/signin",
        data={"csrf": csrf_of(form.text), "token": console.service.tokens[Role.OWNER]},
    )
    cookies = [v for k, v in answer.headers.multi_items() if k == "set-cookie"]
    session_cookie = next(c for c in cookies if c.startswith(f"{COOKIE}="))
    assert "HttpOnly" in session_cookie and "SameSite=Strict" in session_cookie
    assert "Secure" not in session_cookie  # plain http here; see the TLS test
    assert console.service.tokens[Role.OWNER] not in session_cookie
    static = await client.get("/static/chart.umd.min.js")
    assert static.status_code == 200 and static.headers["content-type"].startswith(
        "text/javascript"
    )
    for path in ("/static/..%2Fapp.py", "/static/app.py", "/static/missing.js"):
        assert (await client.get(path)).status_code == 404


async def test_cookies_are_secure_when_served_over_tls(console: Browserless) -> None:
    """Served over https, the session cookie is Secure and HSTS is sent."""
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=console.app), base_url="https://console.test"
    )
    console.clients.append(client)
    form = await client.get("/signin")
    answer = await client.post(
        "/signin",
        data={"csrf": csrf_of(form.text), "token": console.service.tokens[Role.OWNER]},
    )
    cookies = [v for k, v in answer.headers.multi_items() if k == "set-cookie"]
    assert all("Secure" in c for c in cookies)
    assert "strict-transport-security" in answer.headers


async def test_a_huge_or_malformed_post_is_refused_cleanly(console: Browserless) -> None:
    """An oversized body gets 413 and a body with too many fields 400, never a crash."""
    client = await console.signed_in(Role.OWNER)
    csrf = await console.csrf(client)
    huge = await client.post("/providers", content=b"a=" + b"x" * 300_000)
    assert huge.status_code == 413
    many = "&".join(f"f{i}=1" for i in range(500)) + f"&csrf={csrf}"
    answer = await client.post(
        "/providers", content=many, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert answer.status_code == 400


async def test_control_bytes_and_odd_ids_get_clear_answers_not_crashes(
    console: Browserless,
) -> None:
    """NUL and control bytes in paths, filters, page tokens and form fields are answered 4xx or shown escaped."""
    client = await console.signed_in(Role.OWNER)
    csrf = await console.csrf(client)
    for path, status in (
        ("/providers/%00", 400),
        ("/providers/no-such-provider", 404),
        ("/usage/%00%1b", 400),
        ("/usage/00000000-0000-7000-8000-000000000000", 404),
        ("/tokens/x/revoke", 405),
    ):
        answer = await client.get(path)
        assert answer.status_code == status, (path, answer.text[:300])
    odd = await client.get("/usage", params={"provider": "a\x00b", "client": "\x1b[31m"})
    assert odd.status_code == 200 and "\x1b" not in odd.text and "printable" in odd.text
    bad_page = await client.get("/usage", params={"page": "\x00not-a-token"})
    assert bad_page.status_code == 400
    made = await console.create_provider(
        client,
        {
            "name": "ctl\x00name",
            "type": "openai",
            "display_name": "<script>alert(1)</script>\x1b",
            "keys": "sk-ctl-0123456789abcdef",
        },
        csrf,
    )
    assert made.status_code == 400
    assert "<script>alert(1)</script>" not in made.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in made.text
    revoked = await client.post("/tokens/%00/revoke", data={"csrf": csrf})
    assert revoked.status_code in (400, 404)


async def test_signing_out_or_in_again_retires_the_old_session_id(console: Browserless) -> None:
    """After sign-out, or a new sign-in in the same browser, the previous session id opens nothing."""
    client = await console.signed_in(Role.OWNER)
    first = client.cookies[COOKIE]
    assert (await client.get("/signin")).status_code == 303  # signed in: sent on
    fresh_form = await console.client().get("/signin")
    client.cookies.set(PRE_COOKIE, fresh_form.cookies[PRE_COOKIE], domain="console.test")
    relogin = await client.post(
        "/signin",
        data={"csrf": csrf_of(fresh_form.text), "token": console.service.tokens[Role.AUDITOR]},
    )
    assert relogin.status_code == 303
    assert console.app.sessions.get(first) is None
    second = client.cookies[COOKIE]
    assert second != first
    csrf = await console.csrf(client)
    out = await client.post("/signout", data={"csrf": csrf})
    assert out.status_code == 303 and console.app.sessions.get(second) is None
    for old in (first, second):
        stale = console.client()
        stale.cookies.set(COOKIE, old)
        assert (await stale.get("/usage")).headers.get("location") == "/signin"
