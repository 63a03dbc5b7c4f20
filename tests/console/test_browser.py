"""The console in a real headless Chromium (Debian's package, driven by Playwright) against
real processes: config service, bridge and console (tests/fixtures/processes.py).

Skipped, with the reason, where no chromium is installed (`apt-get install chromium`);
Playwright's own browser download is never used. Screenshots of every page are written
to $AIBRIDGE_TEST_SCREENSHOTS (default: console-screenshots/ under pytest's base temp).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest

from aibridge.config.v1 import token_admin_service_pb2 as ta
from aibridge.config.v1 import token_admin_service_pb2_grpc as ta_grpc
from aibridge.config.v1 import usage_pb2
from aibridge.config.v1 import usage_service_pb2 as us
from aibridge.config.v1 import usage_service_pb2_grpc as us_grpc
from aibridge.recording import new_record_id
from tests.fixtures.services import ADMIN_TOKEN, BRIDGE_TOKEN, Procs
from tests.fixtures.upstream import FakeUpstream, ThreadedUpstream
from tests.fixtures.waits import eventually

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
UPSTREAM_KEY = "sk-browser-test-upstream-key-0123456789abcdef"
sync_api: Any
try:
    from playwright import sync_api
except ImportError:  # pragma: no cover - dev dependency
    sync_api = None

pytestmark = [
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(),
        reason="no chromium found: `apt-get install -y chromium` to run the browser tests",
    ),
    pytest.mark.skipif(sync_api is None, reason="the playwright package is not installed"),
    pytest.mark.timeout(240),
]


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Path:
    """Where screenshots go: $AIBRIDGE_TEST_SCREENSHOTS, else under pytest's base temp."""
    given = os.environ.get("AIBRIDGE_TEST_SCREENSHOTS")
    base = Path(given) if given else request.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    folder = base / "console-screenshots" if not given else base
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def upstream() -> Iterator[ThreadedUpstream]:
    server = ThreadedUpstream(FakeUpstream(text="Hello from upstream")).start()
    yield server
    server.stop()


@pytest.fixture
def stack(procs: Procs, database_url: str, tmp_path: Path) -> dict[str, str]:
    """Config service, bridge and console as real processes; their URLs."""
    cs = procs.config_service(database_url)
    bridge = procs.bridge(cs.target, node_id="bridge-1")
    console = procs.start(
        "console",
        ["console"],
        {
            "AIBRIDGE_CONFIG_SERVICE": cs.target,
            "AIBRIDGE_CONSOLE_LISTEN": "127.0.0.1:0",
            "AIBRIDGE_LOG_FORMAT": "json",
        },
        "console listening",
    )
    return {"target": cs.target, "bridge": bridge.ready["url"], "console": console.ready["url"]}


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def _page(browser: Any, width: int = 1280, height: int = 900) -> tuple[Any, list[str]]:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    problems: list[str] = []
    # Script errors and CSP refusals; not the 400s of forms answered with their errors.
    page.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    return page, problems


def _sign_in(page: Any, base: str, token: str) -> None:
    page.goto(f"{base}/signin")
    # The token field takes the focus by itself (autofocus): the keyboard alone signs in.
    page.wait_for_function("document.activeElement && document.activeElement.id === 'token'")
    page.keyboard.type(token)
    with page.expect_navigation():
        page.keyboard.press("Enter")


def wait(condition: Callable[[], object], within: float = 10.0, every: float = 0.01) -> None:
    """`eventually`, from a thread of its own: Playwright's sync API holds this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, eventually(condition, within, every)).result()


def _fits(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def _whoami(target: str, token: str) -> ta.WhoAmIResponse:
    with grpc.insecure_channel(target) as channel:
        return ta_grpc.TokenAdminServiceStub(channel).WhoAmI(
            ta.WhoAmIRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=10
        )


def _sdk(stack: dict[str, str], token: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{stack['bridge']}/team-openai/v1", api_key=token, max_retries=0, timeout=10
    )


def _chat(client: openai.OpenAI) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": "hello"}]
    )


def test_an_owner_runs_the_stack_from_the_browser(
    stack: dict[str, str], upstream: ThreadedUpstream, browser: Any, shots: Path, procs: Procs
) -> None:
    """Sign in, create a provider with a key, see the bridge acknowledge it, make SDK calls,
    see usage, revoke the token and see the bridge refuse it, at desktop and phone width; no
    process logs a key or token."""
    base = stack["console"]
    page, problems = _page(browser)
    page.goto(f"{base}/signin")
    page.screenshot(path=str(shots / "signin.png"))
    _sign_in(page, base, ADMIN_TOKEN)
    assert page.url.endswith("/providers"), page.inner_text("main")

    # A provider with a bad name first: the rulebook's message is beside the field.
    page.click("text=New provider")
    page.fill("#name", "Team OpenAI")
    page.select_option("#type", "openai")
    page.fill("#base_url", f"http://127.0.0.1:{upstream.port}/v1/")
    page.fill("#key0", UPSTREAM_KEY)
    page.click("button:has-text('Create provider')")
    assert page.locator("#name-error").is_visible()
    assert page.input_value("#key0") == ""  # secrets are never refilled
    page.screenshot(path=str(shots / "provider-validation.png"), full_page=True)
    page.fill("#name", "team-openai")
    page.fill("#key0", UPSTREAM_KEY)
    page.click("button:has-text('Create provider')")
    assert re.search(r"/providers/team-openai\?notice=created$", page.url)
    assert UPSTREAM_KEY not in page.content()
    page.screenshot(path=str(shots / "provider.png"), full_page=True)
    page.goto(f"{base}/providers")
    version = page.inner_text("#snapshot-version")
    page.screenshot(path=str(shots / "providers.png"), full_page=True)

    # The running bridge acknowledges that version; the live page shows it without a reload.
    page.goto(f"{base}/subscribers")
    row = page.locator('tr[data-node="bridge-1"]')
    row.locator(".ack", has_text=version).wait_for(timeout=10_000)
    assert "sub-current" in (row.get_attribute("class") or "")
    page.screenshot(path=str(shots / "subscribers.png"), full_page=True)

    # A member token made on the tokens page: shown once, then used by the SDK.
    page.goto(f"{base}/tokens")
    page.fill("#principal_name", "sdk-user")
    page.select_option("#role", "member")
    page.click("button:has-text('Create token')")
    secret = page.input_value("#new-secret")
    assert secret.startswith("aib_")
    client = _sdk(stack, secret)

    def answered() -> bool:
        try:
            return _chat(client).parse().choices[0].message.content == "Hello from upstream"
        except openai.AuthenticationError:
            return False  # the bridge has not applied the snapshot with the new token yet

    wait(answered)
    raw = _chat(client)
    assert raw.parse().choices[0].message.content == "Hello from upstream"

    # Usage: the records the bridge writes (here written with the bridge's own token, as
    # its recorder does) show in the charts, the table and the detail view.
    principal = _whoami(stack["target"], secret).principal_id
    records = []
    for i in range(3):
        record = usage_pb2.Interception(
            id=new_record_id(),
            provider_name="team-openai",
            provider_type=1,
            route="/v1/chat/completions",
            requested_model="gpt-test",
            outcome=usage_pb2.OUTCOME_COMPLETED if i else usage_pb2.OUTCOME_UPSTREAM_ERROR,
            status_code=200 if i else 502,
            principal_id=principal,
            principal_name="sdk-user",
            client="openai-python",
            usage=usage_pb2.TokenUsage(input_tokens=12, output_tokens=30),
            tool_calls=[usage_pb2.ToolCall(name="read_file", call_id=f"c{i}", arguments="{}")],
        )
        record.started_at.GetCurrentTime()
        record.ended_at.CopyFrom(record.started_at)
        records.append(record)
    with grpc.insecure_channel(stack["target"]) as channel:
        us_grpc.UsageServiceStub(channel).RecordInterceptions(
            us.RecordInterceptionsRequest(interceptions=records),
            metadata=(("authorization", f"Bearer {BRIDGE_TOKEN}"),),
            timeout=10,
        )
    page.goto(f"{base}/usage")
    assert int(page.inner_text("#total-requests").replace(",", "")) >= 3
    page.wait_for_function("() => window.Chart && Chart.getChart('chart-requests') !== undefined")
    assert page.locator("table.records tbody tr").count() >= 3
    page.screenshot(path=str(shots / "usage.png"), full_page=True)
    page.locator("table.records tbody tr a").first.click()
    assert "read_file" in page.content()
    page.screenshot(path=str(shots / "usage-detail.png"), full_page=True)

    # Revoke the member token: the bridge refuses it once the change has propagated.
    page.goto(f"{base}/tokens")
    page.click("button[aria-label^='Revoke the token of sdk-user']")
    assert page.locator("tr.revoked", has_text="sdk-user").count() == 1
    page.screenshot(path=str(shots / "tokens.png"), full_page=True)

    def refused() -> bool:
        try:
            _chat(client)
        except openai.AuthenticationError:
            return True
        return False

    wait(refused)

    # Phone width: the pages reflow instead of overflowing.
    phone, phone_problems = _page(browser, 390, 844)
    _sign_in(phone, base, ADMIN_TOKEN)
    for path, name in (("/providers", "providers-phone"), ("/usage", "usage-phone")):
        phone.goto(f"{base}{path}")
        assert _fits(phone), path
        phone.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    assert not problems and not phone_problems, problems + phone_problems
    for proc in procs.all:
        logged = "".join(proc.lines)
        for leak in (UPSTREAM_KEY, secret, ADMIN_TOKEN, BRIDGE_TOKEN):
            assert leak not in logged, proc.name


def test_a_member_gets_a_clear_403_and_only_its_own_usage(
    stack: dict[str, str], browser: Any, shots: Path
) -> None:
    """A member signs in with the keyboard, lands on its usage, and gets a 403 page for providers."""
    with grpc.insecure_channel(stack["target"]) as channel:
        made = ta_grpc.TokenAdminServiceStub(channel).CreateToken(
            ta.CreateTokenRequest(principal_name="browser-member", role=3),
            metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),),
            timeout=10,
        )
    page, problems = _page(browser)
    _sign_in(page, stack["console"], made.secret)
    assert page.url.endswith("/usage")
    assert page.locator("nav a", has_text="Providers").count() == 0
    page.goto(f"{stack['console']}/providers")
    assert "Not allowed" in page.inner_text("h1")
    page.screenshot(path=str(shots / "member-403.png"))
    assert not problems, problems


def test_sdk_calls_through_the_bridge_appear_on_the_usage_page(
    stack: dict[str, str], upstream: ThreadedUpstream, browser: Any
) -> None:
    """Calls made through the bridge show on the usage page, recorded by the bridge itself."""
    with grpc.insecure_channel(stack["target"]) as channel:
        from aibridge.config.v1 import provider_admin_service_pb2 as pa
        from aibridge.config.v1 import provider_admin_service_pb2_grpc as pa_grpc

        md = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
        pa_grpc.ProviderAdminServiceStub(channel).CreateProvider(
            pa.CreateProviderRequest(
                name="team-openai",
                type=1,
                base_url=f"http://127.0.0.1:{upstream.port}/v1/",
                keys=[UPSTREAM_KEY],
            ),
            metadata=md,
            timeout=10,
        )
        made = ta_grpc.TokenAdminServiceStub(channel).CreateToken(
            ta.CreateTokenRequest(principal_name="recorded-user", role=3), metadata=md, timeout=10
        )
    client = _sdk(stack, made.secret)

    def answer() -> Any:
        try:
            return _chat(client)
        except (openai.AuthenticationError, openai.NotFoundError):
            return None

    wait(lambda: answer() is not None)
    raw = answer()
    assert raw.headers["x-aibridge-request-id"]

    def recorded() -> bool:
        with grpc.insecure_channel(stack["target"]) as channel:
            listed = us_grpc.UsageServiceStub(channel).ListInterceptions(
                us.ListInterceptionsRequest(
                    filter=us.InterceptionFilter(provider_name="team-openai")
                ),
                metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),),
                timeout=10,
            )
        return bool(listed.interceptions)

    wait(recorded, within=20, every=0.2)
    page, _ = _page(browser)
    _sign_in(page, stack["console"], ADMIN_TOKEN)
    page.goto(f"{stack['console']}/usage?provider=team-openai")
    assert int(page.inner_text("#total-requests").replace(",", "")) >= 2
    assert "recorded-user" in page.inner_text("table.records")
