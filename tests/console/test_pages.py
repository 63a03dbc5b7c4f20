"""The console's pages against a real config service: providers, subscribers, usage, tokens."""

from __future__ import annotations

import json
import re

import httpx

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import config_service_pb2_grpc as cs_grpc
from aibridge.config.v1 import provider_admin_service_pb2 as pa
from aibridge.config.v1 import provider_admin_service_pb2_grpc as pa_grpc
from aibridge.config.v1 import usage_pb2
from aibridge.config.v1 import usage_service_pb2 as us
from aibridge.config.v1 import usage_service_pb2_grpc as us_grpc
from aibridge.recording import new_record_id
from config_service.rbac import Role
from tests.console.conftest import PROVIDER_KEY, Browserless, csrf_of
from tests.fixtures.waits import eventually


async def test_owner_signs_in_and_sees_providers_with_key_hints_and_version(
    console: Browserless,
) -> None:
    """An owner's sign-in lands on the providers page: status, type, base URL, masked key, version."""
    client = await console.signed_in(Role.OWNER)
    start = await client.get("/")
    assert start.headers["location"] == "/providers"
    page = await client.get("/providers")
    assert page.status_code == 200
    assert "openai" in page.text and "https://api.openai.com/v1/" in page.text
    assert "sk-c...cdef" in page.text and PROVIDER_KEY not in page.text
    assert re.search(r'id="snapshot-version">\d+<', page.text)


async def test_creating_a_provider_shows_every_rulebook_problem_next_to_its_field(
    console: Browserless,
) -> None:
    """A bad create form is answered 400 with each problem beside its field, the key not refilled."""
    client = await console.signed_in(Role.OWNER)
    answer = await console.create_provider(
        client,
        {
            "name": "Bad Name",
            "type": "openai-compat",
            "base_url": "ftp://nowhere",
            "keys": "sk-typed-into-the-form-0123456789",
        },
    )
    assert answer.status_code == 400
    assert 'id="name-error"' in answer.text and 'id="base_url-error"' in answer.text
    assert 'value="Bad Name"' in answer.text
    assert "sk-typed-into-the-form-0123456789" not in answer.text


async def test_the_config_services_field_error_is_shown_beside_that_field(
    console: Browserless,
) -> None:
    """A name the config service refuses (taken) comes back next to the name field."""
    client = await console.signed_in(Role.OWNER)
    answer = await console.create_provider(
        client, {"name": "openai", "type": "openai", "keys": "sk-x" * 8}
    )
    assert answer.status_code == 409
    assert 'id="name-error"' in answer.text


def etag_of(page: httpx.Response) -> str:
    """The etag a provider page's edit form carries."""
    found = re.search(r'name="etag" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


async def test_an_owner_creates_edits_disables_rekeys_and_deletes_a_provider(
    console: Browserless,
) -> None:
    """Every provider write of the console reaches the config service and shows on the pages."""
    client = await console.signed_in(Role.OWNER)
    stub = pa_grpc.ProviderAdminServiceStub(console.service.channel())
    md = console.service.md_for(Role.OWNER)
    csrf = await console.csrf(client, "/providers/new")
    made = await console.create_provider(
        client,
        {
            "name": "team-a",
            "type": "anthropic",
            "display_name": "Team A",
            "keys": ["sk-ant-first-key-0123456789abcdef", "", "sk-ant-second-key-0123456789abcd"],
        },
        csrf,
    )
    assert made.status_code == 303 and made.headers["location"].startswith("/providers/team-a")
    got = (await stub.GetProvider(pa.GetProviderRequest(id_or_name="team-a"), metadata=md)).provider
    assert (got.display_name, got.key_count) == ("Team A", 2)

    detail = await client.get("/providers/team-a")
    etag = etag_of(detail)
    saved = await client.post(
        "/providers/team-a",
        data={"csrf": csrf, "etag": etag, "display_name": "Team A2", "base_url": ""},
    )
    assert saved.status_code == 303
    stale = await client.post(
        "/providers/team-a",
        data={"csrf": csrf, "etag": etag, "display_name": "Lost", "base_url": ""},
    )
    assert stale.status_code == 409 and "changed" in stale.text.lower()

    await client.post("/providers/team-a/state", data={"csrf": csrf, "enabled": "false"})
    got = (await stub.GetProvider(pa.GetProviderRequest(id_or_name="team-a"), metadata=md)).provider
    assert got.display_name == "Team A2"
    assert got.status == 2  # PROVIDER_STATUS_DISABLED

    added = await client.post(
        "/providers/team-a/keys", data={"csrf": csrf, "secret": "sk-ant-third-key-0123456789abcdef"}
    )
    assert added.status_code == 303
    got = (await stub.GetProvider(pa.GetProviderRequest(id_or_name="team-a"), metadata=md)).provider
    assert got.key_count == 3
    removed = await client.post(
        f"/providers/team-a/keys/{got.keys[0].id}/delete", data={"csrf": csrf}
    )
    assert removed.status_code == 303
    got = (await stub.GetProvider(pa.GetProviderRequest(id_or_name="team-a"), metadata=md)).provider
    assert got.key_count == 2

    unconfirmed = await client.post("/providers/team-a/delete", data={"csrf": csrf, "confirm": ""})
    assert unconfirmed.status_code == 400
    deleted = await client.post(
        "/providers/team-a/delete", data={"csrf": csrf, "confirm": "team-a"}
    )
    assert deleted.status_code == 303
    listing = await client.get("/providers")
    assert "team-a" not in listing.text


async def test_an_auditor_reads_providers_without_any_write_form(console: Browserless) -> None:
    """An auditor sees the provider list and detail, no write buttons; a forced post is refused by the API."""
    client = await console.signed_in(Role.AUDITOR)
    page = await client.get("/providers/openai")
    assert page.status_code == 200
    assert "Add key" not in page.text and "Delete provider" not in page.text
    assert re.search(r'name="display_name" value="[^"]*"[^>]* readonly', page.text)
    csrf = csrf_of(page.text)
    refused = await client.post("/providers/openai/state", data={"csrf": csrf, "enabled": "false"})
    assert refused.status_code == 403


async def test_the_subscribers_page_marks_nodes_behind_and_follows_their_acks(
    console: Browserless,
) -> None:
    """A node that has not acknowledged the current version is marked, and current once it has."""
    client = await console.signed_in(Role.OWNER)
    channel = console.service.channel()
    stub = cs_grpc.ConfigServiceStub(channel)
    md = console.service.md_for(Role.BRIDGE)
    stream = stub.WatchProviders(cs.WatchProvidersRequest(node_id="node-under-test"), metadata=md)
    first = await stream.read()
    assert isinstance(first, cs.WatchProvidersResponse)

    async def row_is(state: str) -> bool:
        rows = await client.get("/subscribers/rows")
        return f'class="sub-{state}" data-node="node-under-test"' in rows.text

    await eventually(lambda: row_is("pending"))
    await stub.ReportStatus(
        cs.ReportStatusRequest(
            node_id="node-under-test", version=first.snapshot.version, applied=True
        ),
        metadata=md,
    )
    await eventually(lambda: row_is("current"))
    page = await client.get("/subscribers")
    assert 'data-live-src="/subscribers/rows"' in page.text and "/static/live.js" in page.text
    stream.cancel()


def _record(principal_id: str, model: str, prompt: str, outcome: int = 1) -> usage_pb2.Interception:
    record = usage_pb2.Interception(
        id=new_record_id(),
        provider_name="openai",
        provider_type=1,
        route="/v1/chat/completions",
        requested_model=model,
        served_model=model,
        outcome=outcome,  # type: ignore[arg-type]
        status_code=200 if outcome == 1 else 502,
        principal_id=principal_id,
        client="openai-python",
        attempts=1,
        usage=usage_pb2.TokenUsage(input_tokens=11, output_tokens=7),
        tool_calls=[
            usage_pb2.ToolCall(name="read_file", call_id="call-1", arguments='{"path": "a"}')
        ],
        prompt=prompt,
    )
    record.started_at.GetCurrentTime()
    record.ended_at.CopyFrom(record.started_at)
    return record


async def _principal(console: Browserless, role: Role) -> str:
    from aibridge.config.v1 import token_admin_service_pb2 as ta
    from aibridge.config.v1 import token_admin_service_pb2_grpc as ta_grpc

    stub = ta_grpc.TokenAdminServiceStub(console.service.channel())
    me = await stub.WhoAmI(ta.WhoAmIRequest(), metadata=console.service.md_for(role))
    return me.principal_id


async def test_usage_shows_charts_failures_records_and_a_detail_view(console: Browserless) -> None:
    """Records written by the bridge role appear in the totals, chart data, table and detail view."""
    member = await _principal(console, Role.MEMBER)
    records = [
        _record(member, "gpt-4o", "what is in a.txt?"),
        _record(member, "gpt-4o-mini", "second", outcome=usage_pb2.OUTCOME_UPSTREAM_ERROR),
    ]
    stub = us_grpc.UsageServiceStub(console.service.channel())
    await stub.RecordInterceptions(
        us.RecordInterceptionsRequest(interceptions=records),
        metadata=console.service.md_for(Role.BRIDGE),
    )
    client = await console.signed_in(Role.OWNER)
    page = await client.get("/usage")
    assert page.status_code == 200
    assert 'id="total-requests">2<' in page.text
    data = json.loads(re.search(r'id="chart-data">(.*?)</script>', page.text, re.S).group(1))  # type: ignore[union-attr]
    assert sum(sum(p["requests"]) for p in data["over_time"]["series"]) == 2
    assert {r["label"] for r in data["by_model"]} == {"gpt-4o", "gpt-4o-mini"}
    assert {r["label"]: r["requests"] for r in data["failures"]}["upstream_error"] == 1
    assert "/static/chart.umd.min.js" in page.text
    by_model = await client.get("/usage", params={"split": "model", "window": "7d"})
    split = json.loads(re.search(r'id="chart-data">(.*?)</script>', by_model.text, re.S).group(1))  # type: ignore[union-attr]
    assert {s["name"] for s in split["over_time"]["series"]} == {"gpt-4o", "gpt-4o-mini"}
    assert len(split["over_time"]["labels"]) in (7, 8)  # one per day of the window
    filtered = await client.get("/usage", params={"model": "gpt-4o-mini"})
    assert 'id="total-requests">1<' in filtered.text
    detail = await client.get(f"/usage/{records[0].id}")
    assert "read_file" in detail.text and "what is in a.txt?" in detail.text
    assert "{&#34;path&#34;: &#34;a&#34;}" in detail.text
    bad = await client.get("/usage", params={"window": "5y", "client": "Not A Slug"})
    assert bad.status_code == 200 and "window: choose" in bad.text


async def test_a_member_sees_only_its_own_usage_without_prompts(console: Browserless) -> None:
    """A member's usage page counts its own records only, and its detail view blanks prompt and arguments."""
    member = await _principal(console, Role.MEMBER)
    auditor = await _principal(console, Role.AUDITOR)
    mine, theirs = _record(member, "gpt-4o", "my secret prompt"), _record(auditor, "o3", "other")
    stub = us_grpc.UsageServiceStub(console.service.channel())
    await stub.RecordInterceptions(
        us.RecordInterceptionsRequest(interceptions=[mine, theirs]),
        metadata=console.service.md_for(Role.BRIDGE),
    )
    client = await console.signed_in(Role.MEMBER)
    assert (await client.get("/")).headers["location"] == "/usage"
    page = await client.get("/usage")
    assert 'id="total-requests">1<' in page.text
    data = json.loads(re.search(r'id="chart-data">(.*?)</script>', page.text, re.S).group(1))  # type: ignore[union-attr]
    assert {r["label"] for r in data["by_model"]} == {"gpt-4o"}
    assert ">o3<" not in page.text and '"o3"' not in page.text
    detail = await client.get(f"/usage/{mine.id}")
    assert "read_file" in detail.text and "my secret prompt" not in detail.text
    assert (await client.get(f"/usage/{theirs.id}")).status_code == 404


async def test_tokens_are_created_once_listed_and_revoked(console: Browserless) -> None:
    """A created token is shown once, listed by hint afterwards, and marked once revoked."""
    client = await console.signed_in(Role.OWNER)
    csrf = await console.csrf(client, "/tokens")
    made = await client.post(
        "/tokens", data={"csrf": csrf, "principal_name": "alice", "role": "member"}
    )
    assert made.status_code == 200
    secret = re.search(r'id="new-secret" class="mono" readonly value="([^"]+)"', made.text)
    assert secret
    listing = await client.get("/tokens")
    assert "alice" in listing.text and secret.group(1) not in listing.text
    token_id = re.search(r'data-token="([^"]+)">\s*<td>alice', listing.text)
    assert token_id
    alice = await console.sign_in(secret.group(1))
    assert (await alice.get("/usage")).status_code == 200
    revoked = await client.post(f"/tokens/{token_id.group(1)}/revoke", data={"csrf": csrf})
    assert revoked.status_code == 303
    listing = await client.get("/tokens")
    assert re.search(rf'class="revoked" data-token="{token_id.group(1)}"', listing.text)
    # The revoked token's session ends at its next page.
    ended = await alice.get("/usage")
    assert ended.status_code == 303 and ended.headers["location"] == "/signin?expired=1"
    bad = await client.post("/tokens", data={"csrf": csrf, "principal_name": "x", "role": "bridge"})
    assert bad.status_code == 400


async def test_the_console_says_when_the_config_service_is_away(console: Browserless) -> None:
    """With the config service stopped, a page answers 503 naming it, and sign-in says so too."""
    client = await console.signed_in(Role.OWNER)
    await console.service.running.stop(grace=0)
    page = await client.get("/providers")
    assert page.status_code == 503 and "config service" in page.text
    fresh = console.client()
    form = await fresh.get("/signin")
    answer = await fresh.post("/signin", data={"csrf": csrf_of(form.text), "token": "t" * 40})
    assert answer.status_code == 503


async def test_a_bedrock_provider_takes_credentials_write_only(console: Browserless) -> None:
    """Bedrock region and credentials are created from the form; the page shows the hint only, and half a credential pair is refused."""
    access_key, secret = "AKIACONSOLETEST01234", "console/test/secret/0123456789abcdefghijkl"
    client = await console.signed_in(Role.OWNER)
    csrf = await console.csrf(client, "/providers/new")
    form = {"name": "bedrock-a", "type": "bedrock", "bedrock.region": "us-east-1"}
    form |= {"bedrock.access_key": access_key, "bedrock.access_key_secret": secret}
    made = await console.create_provider(client, form, csrf)
    assert made.status_code == 303, made.text
    page = await client.get("/providers/bedrock-a")
    assert 'value="us-east-1"' in page.text and "stored (" in page.text
    assert access_key not in page.text and secret not in page.text
    edit = {"csrf": csrf, "etag": etag_of(page), "has_bedrock": "1"}
    half = await client.post(
        "/providers/bedrock-a",
        data=edit | {"bedrock.region": "us-west-2", "bedrock.access_key": "AKIAONLYHALF00000000"},
    )
    assert half.status_code == 400 and "give both" in half.text
    assert "AKIAONLYHALF00000000" not in half.text
    bad_region = await client.post(
        "/providers/bedrock-a", data=edit | {"bedrock.region": "Not A Region"}
    )
    assert bad_region.status_code == 400 and 'id="bedrock.region-error"' in bad_region.text


def test_the_over_time_series_keep_the_biggest_and_add_up_the_rest() -> None:
    """Past eight series the smallest become "(other)", every period is present, and nothing is lost."""
    from datetime import UTC, datetime, timedelta

    from console.pages.usage import MAX_SERIES, series

    now = datetime(2026, 1, 2, 12, 30, tzinfo=UTC)
    response = us.SummarizeUsageResponse()
    for i in range(MAX_SERIES + 3):
        group = response.groups.add(model=f"m{i:02d}")
        group.period_start.FromDatetime(datetime(2026, 1, 2, 10, tzinfo=UTC))
        group.counts.requests = 100 - i
        group.counts.usage.input_tokens = 1
    drawn = series(response, "model", now - timedelta(hours=3), timedelta(hours=1), now)
    assert drawn["labels"] == ["01-02 09:00", "01-02 10:00", "01-02 11:00", "01-02 12:00"]
    names = [s["name"] for s in drawn["series"]]
    assert len(names) == MAX_SERIES + 1 and "(other)" in names and "m10" not in names
    assert sum(sum(s["requests"]) for s in drawn["series"]) == sum(
        g.counts.requests for g in response.groups
    )
