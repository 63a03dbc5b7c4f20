"""Host map derivation from a snapshot: which hosts are intercepted for which provider."""

from __future__ import annotations

from dp_fakes import MEMBER_TOKEN, provider, snapshot

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import provider_pb2 as pb
from data_plane.proxy.routes import ProxyTable, Route, build_table

OPENAI, ANTHROPIC = pb.PROVIDER_TYPE_OPENAI, pb.PROVIDER_TYPE_ANTHROPIC


def table_of(
    *providers: pb.Provider, version: str = "1"
) -> tuple[ProxyTable, list[cs.ProviderError]]:
    """The host map of a snapshot with these providers."""
    return build_table(snapshot(version, list(providers)))


def test_hosts_come_from_base_urls_lower_cased() -> None:
    """Each enabled provider's base URL hostname (lower-cased) maps to that provider."""
    table, errors = table_of(
        provider("openai", OPENAI, "https://API.OpenAI.com/v1/"),
        provider("claude", ANTHROPIC, "https://api.anthropic.com"),
        version="7",
    )
    assert errors == []
    assert table.version == "7"
    assert dict(table.hosts) == {
        "api.openai.com": Route("openai", "openai", "/v1", "/v1"),
        "api.anthropic.com": Route("claude", "anthropic", "", ""),
    }
    assert table.route("API.ANTHROPIC.COM.") is not None
    assert table.providers["openai"] == ("openai", "intercepted")


def test_shared_host_goes_to_the_first_name_and_the_loser_is_reported() -> None:
    """Two providers on one host: the first by name wins, the other is a reported error."""
    table, errors = table_of(
        provider("zeta", OPENAI, "https://llm.example.com/v1/"),
        provider("alpha", OPENAI, "https://llm.example.com/other/v1/"),
    )
    assert table.hosts["llm.example.com"].provider == "alpha"
    assert [(e.provider_name, "claimed by provider 'alpha'" in e.message) for e in errors] == [
        ("zeta", True)
    ]
    assert table.providers["zeta"] == ("openai", "excluded")


def test_disabled_and_error_providers_are_not_intercepted() -> None:
    """Disabled and ERROR providers claim no host (and are not errors of the proxy)."""
    table, errors = table_of(
        provider("a", OPENAI, "https://a.example/", status=pb.PROVIDER_STATUS_DISABLED),
        provider("b", OPENAI, "https://a.example/", status=pb.PROVIDER_STATUS_ERROR),
        provider("c", OPENAI, "https://a.example/v1/"),
    )
    assert errors == []
    assert table.hosts["a.example"].provider == "c"
    assert table.providers["a"][1] == "disabled" and table.providers["b"][1] == "error"


def test_unparseable_base_urls_are_reported_and_empty_ones_not_intercepted() -> None:
    """A base URL without a hostname is reported; an empty one (only Bedrock is enabled
    without one, the config service fills in every other type's default) is not intercepted."""
    table, errors = table_of(
        provider("bad", OPENAI, "not a url"),
        provider("broken", OPENAI, "https://[::1/v1"),
        provider("good", OPENAI, "https://api.openai.com/v1/"),
        provider("rock", pb.PROVIDER_TYPE_BEDROCK, ""),
    )
    assert sorted(e.provider_name for e in errors) == ["bad", "broken"]
    assert set(table.hosts) == {"api.openai.com"}
    assert table.providers["rock"][1] == "not-intercepted"


def test_bridge_path_maps_deeper_base_paths_onto_the_bridge_routes() -> None:
    """Paths under the base URL's path land on /<provider>/v1/...; others pass as they are."""
    openrouter = Route("router", "openrouter", "/api/v1", "/v1")
    assert openrouter.bridge_path("/api/v1/chat/completions?a=1") == (
        "/router/v1/chat/completions?a=1"
    )
    assert openrouter.bridge_path("/elsewhere") == "/router/elsewhere"
    assert Route("openai", "openai", "/v1", "/v1").bridge_path("/v1/models") == "/openai/v1/models"
    assert Route("a", "anthropic", "", "").bridge_path("/v1/messages") == "/a/v1/messages"


def test_gateway_tokens_are_indexed_by_hash() -> None:
    """The snapshot's gateway tokens become the proxy's credential table."""
    from aibridge.masking import sha256_hex

    table, _ = table_of()
    assert table.tokens[sha256_hex(MEMBER_TOKEN)].principal_name == "member"
