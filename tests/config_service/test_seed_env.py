"""Parsing of provider seed config from the environment (config_service.seed.env)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aibridge.rulebook import (
    DEFAULT_BEDROCK_MODEL,
    DEFAULT_BEDROCK_SMALL_FAST_MODEL,
    TYPES,
    ProviderSpec,
)
from config_service.seed.env import (
    SeedConfigError,
    SeedPlan,
    parse_env,
)

# Distinctive fake secrets: if one shows up in a message, it leaked.
K1 = "sk-live-AAAA1111bbbb2222cccc"
K2 = "sk-live-DDDD3333eeee4444ffff"
K3 = "sk-live-GGGG5555hhhh6666iiii"
AK = "AKIA-LEAKCHECK-7777jjjj"
SK = "aws-secret-LEAKCHECK-8888kkkk"
_SECRET_SUFFIXES = ("KEY", "KEYS", "SECRET", "SECRETS", "KYE")

P = "AIBRIDGE_PROVIDER_"
_LEGACY_BEDROCK_CREDENTIALS = {
    "AIBRIDGE_BEDROCK_ACCESS_KEY": AK,
    "AIBRIDGE_BEDROCK_ACCESS_KEY_SECRET": SK,
}


def _secret_values(env: dict[str, str]) -> list[str]:
    """Every key/secret value in `env` (comma-separated lists split), by variable name."""
    values = []
    for var, value in env.items():
        if var.upper().endswith(_SECRET_SUFFIXES):
            values += [part.strip() for part in value.split(",") if part.strip()]
    return values


def _assert_no_leak(env: dict[str, str], texts: list[str]) -> None:
    for secret in _secret_values(env):
        for text in texts:
            assert secret not in text, f"secret leaked into: {text}"


def _problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(SeedConfigError) as info:
        parse_env(env)
    error = info.value
    _assert_no_leak(env, [*error.problems, str(error), repr(error)])
    return error.problems


def _plan(env: dict[str, str]) -> SeedPlan:
    plan = parse_env(env)
    _assert_no_leak(env, [*plan.warnings, repr(plan), str(plan)])
    return plan


def _idx(**fields: str) -> dict[str, str]:
    """Indexed provider 0's variables, by field name."""
    return {f"{P}0_{field}": value for field, value in fields.items()}


def _only(env: dict[str, str]) -> ProviderSpec:
    (provider,) = _plan(env).providers
    return provider


# One case a line, so the table reads as a table.
# fmt: off
ERROR_CASES = [
    pytest.param({f"{P}0_TYPE": "openai", f"{P}2_TYPE": "anthropic"}, ["AIBRIDGE_PROVIDER_1_*", "contiguous"], id="skipped-index"),
    pytest.param({f"{P}X_TYPE": "openai"}, [f"{P}X_TYPE", "whole number"], id="non-numeric"),
    pytest.param({f"{P}-1_TYPE": "openai"}, [f"{P}-1_TYPE", "whole number"], id="negative"),
    pytest.param({f"{P}01_TYPE": "openai"}, [f"{P}01_TYPE", "leading zeros"], id="leading-zero"),
    pytest.param({f"{P}0_KEY": K1}, [f"{P}0_TYPE: type is required: one of openai"], id="missing-type"),
    pytest.param({f"{P}0_TYPE": "gemini"}, [f"{P}0_TYPE: type must be one of openai, anthropic, bedrock", "copilot"], id="unknown-type"),
    pytest.param({f"{P}0_TYPE": "openai", f"{P}0_NAME": "My_OpenAI"}, [f"{P}0_NAME: name must match ^[a-z0-9]+(-[a-z0-9]+)*$"], id="invalid-name"),
    pytest.param({f"{P}0_TYPE": "openai", f"{P}0_NAME": "x", f"{P}1_TYPE": "anthropic", f"{P}1_NAME": "x"}, [f"{P}1_*", "duplicate NAME 'x'", f"{P}0_*"], id="duplicate-name"),
    pytest.param({f"{P}0_TYPE": "openai", f"{P}1_TYPE": "openai"}, [f"{P}1_*", "duplicate NAME 'openai'", f"{P}1_NAME"], id="duplicate-default-name"),
    pytest.param({f"{P}0_TYPE": "openai", f"{P}0_KEY": K1, f"{P}0_KEYS": K2}, ["set only one of", f"{P}0_KEY ", f"{P}0_KEYS"], id="key-and-keys"),
    pytest.param({f"{P}0_TYPE": "openai", f"{P}0_KEYS": ",".join(f"{K1}{i}" for i in range(6))}, [f"{P}0_KEYS: keys at most 5 keys per provider, got 6"], id="too-many-keys"),
    pytest.param({f"{P}0_TYPE": "openai", f"{P}0_KEYS": f"{K1},,{K2}"}, [f"{P}0_KEYS: keys[1] is empty"], id="empty-key"),
    pytest.param({f"{P}0_TYPE": "openai", f"{P}0_KEYS": f"{K1},{K2}, {K1}"}, [f"{P}0_KEYS: keys[2] duplicate key (same as keys[0])"], id="duplicate-key"),
    pytest.param({f"{P}0_TYPE": "openai", f"{P}0_BEDROCK_REGION": "us-east-1"}, [f"{P}0_BEDROCK_*: bedrock Bedrock settings", "anthropic and bedrock, not openai"], id="bedrock-on-openai"),
    pytest.param({f"{P}0_TYPE": "anthropic", f"{P}0_KEY": K1, f"{P}0_BEDROCK_REGION": "us-east-1"}, [f"{P}0_KEY: keys a Bedrock-backed provider takes no API keys"], id="key-with-bedrock"),
    pytest.param({f"{P}0_TYPE": "bedrock", f"{P}0_KEY": K1}, [f"{P}0_KEY: keys type bedrock takes no API keys", "AWS credentials"], id="key-on-bedrock"),
    pytest.param({f"{P}0_TYPE": "copilot", f"{P}0_KEYS": K1}, [f"{P}0_KEYS: keys type copilot takes no API keys", "each user's own token"], id="key-on-copilot"),
    pytest.param({f"{P}0_TYPE": "bedrock"}, [f"{P}0_BEDROCK_REGION: bedrock.region is required for a Bedrock provider"], id="bedrock-without-fields"),
    pytest.param(_idx(TYPE="bedrock", BEDROCK_REGION="us-east-1", BEDROCK_ACCESS_KEY=AK), [f"{P}0_BEDROCK_ACCESS_KEY_SECRET: bedrock.access_key_secret is required with"], id="access-key-without-secret"),
    pytest.param(_idx(TYPE="bedrock", BEDROCK_REGION="us-east-1", BEDROCK_ACCESS_KEY_SECRET=SK), [f"{P}0_BEDROCK_ACCESS_KEY: bedrock.access_key is required with"], id="secret-without-access-key"),
    pytest.param({f"{P}0_TYPE": "openai", f"{P}0_BASE_URL": "api.openai.com/v1"}, [f"{P}0_BASE_URL: base_url must be an absolute http(s) URL"], id="relative-base-url"),
    pytest.param({f"{P}0_TYPE": "openai", f"{P}0_BASE_URL": "ftp://example.com/"}, [f"{P}0_BASE_URL: base_url must be an absolute http(s) URL"], id="non-http-base-url"),
    *(
        pytest.param(
            {f"{P}0_TYPE": "openai", f"{P}0_BASE_URL": url},
            [f"{P}0_BASE_URL: base_url "],
            id=f"malformed-base-url-{i}",
        )
        for i, url in enumerate(["http://[::1", "https://h:99999/", "https:///v1", "http://a b/"])
    ),
    pytest.param({"AIBRIDGE_OPENAI_KEY": K1, f"{P}0_TYPE": "openai"}, [f"{P}0_*", "'openai' conflicts with the legacy env var AIBRIDGE_OPENAI_KEY", "remove one"], id="conflicts-with-legacy-openai"),
    pytest.param({"AIBRIDGE_BEDROCK_REGION": "eu-west-1", f"{P}0_TYPE": "anthropic", f"{P}0_KEY": K1}, ["'anthropic' conflicts with the legacy env var AIBRIDGE_BEDROCK_*"], id="conflicts-with-legacy-bedrock"),
    pytest.param({"AIBRIDGE_ANTHROPIC_KEY": K1, "AIBRIDGE_BEDROCK_REGION": "us-east-1"}, ["AIBRIDGE_ANTHROPIC_KEY and AIBRIDGE_BEDROCK_*", "mutually exclusive"], id="legacy-anthropic-and-bedrock-region"),
    pytest.param({"AIBRIDGE_ANTHROPIC_KEY": K1} | _LEGACY_BEDROCK_CREDENTIALS, ["mutually exclusive", "AIBRIDGE_BEDROCK_ACCESS_KEY_SECRET"], id="legacy-anthropic-and-bedrock-credentials"),
    pytest.param({"AIBRIDGE_BEDROCK_REGION": "us-east-1", "AIBRIDGE_BEDROCK_ACCESS_KEY": AK}, ["AIBRIDGE_BEDROCK_ACCESS_KEY_SECRET: bedrock.access_key_secret is required with"], id="legacy-bedrock-half-credentials"),
    pytest.param({"AIBRIDGE_OPENAI_KEY": K1, "AIBRIDGE_OPENAI_BASE_URL": "not a url"}, ["AIBRIDGE_OPENAI_BASE_URL: base_url must be an absolute http(s) URL"], id="legacy-bad-base-url"),
    pytest.param({"AIBRIDGE_ANTHROPIC_KEY": f"{K1},{K1}"}, ["AIBRIDGE_ANTHROPIC_KEY: keys[1] duplicate key (same as keys[0])"], id="legacy-duplicate-key"),
    pytest.param({"AIBRIDGE_OPENAI_KEY": K1, "CODER_AI_GATEWAY_PROVIDER_0_TYPE": "anthropic"}, ["cannot mix", "AIBRIDGE_*", "CODER_AI_GATEWAY_*", "consolidate onto one prefix"], id="mixed-prefixes-legacy-and-indexed"),
    pytest.param({"CODER_AIBRIDGE_PROVIDER_0_TYPE": "openai", "CODER_AI_GATEWAY_PROVIDER_1_TYPE": "x"}, ["cannot mix", "CODER_AI_GATEWAY_*", "CODER_AIBRIDGE_*"], id="mixed-coder-prefixes"),
    pytest.param({f"{P}0_TYPE": "openai", f"{P}0_type": "anthropic"}, [f"{P}0_TYPE and {P}0_type", "case-insensitively"], id="same-field-twice"),
    pytest.param({f"{P}0_TYPE": "bedrock", f"{P}0_BEDROCK_BASE_URL": "https://bedrock.corp.example/"}, [f"{P}0_BEDROCK_REGION: bedrock.region is required", "signed"], id="bedrock-base-url-without-region"),
    pytest.param({f"{P}0_TYPE": "bedrock", f"{P}0_BEDROCK_REGION": "Virginia"}, [f"{P}0_BEDROCK_REGION: bedrock.region is not an AWS region"], id="bad-region"),
    pytest.param(_idx(TYPE="bedrock", BEDROCK_REGION="us-east-1", BEDROCK_ROLE_ARN="x"), [f"{P}0_BEDROCK_ROLE_ARN: bedrock.role_arn must be an IAM role ARN"], id="bad-role-arn"),
    pytest.param(_idx(TYPE="bedrock", BEDROCK_REGION="us-east-1", BASE_URL="https://example.com/"), [f"{P}0_BASE_URL is not used by a Bedrock provider", f"{P}0_BEDROCK_BASE_URL"], id="base-url-on-bedrock"),
    pytest.param(_idx(TYPE="bedrock", BEDROCK_REGION="us-east-1", BEDROCK_ACCESS_KEYS=f"{AK},{AK}2", BEDROCK_ACCESS_KEY_SECRETS=f"{SK},{SK}2"), ["only one Bedrock access key pair"], id="several-bedrock-key-pairs"),
    *(
        pytest.param(
            {f"{P}0_TYPE": ptype, f"{P}0_KEY": K1},
            [f"{P}0_BASE_URL: base_url is required for type {ptype} (it has no default)"],
            id=f"base-url-required-{ptype}",
        )
        for ptype in ("azure", "google", "openai-compat", "openrouter", "vercel")
    ),
]
# fmt: on


@pytest.mark.parametrize(("env", "fragments"), ERROR_CASES)
def test_invalid_env_fails_with_a_message_naming_the_problem(
    env: dict[str, str], fragments: list[str]
) -> None:
    """Each invalid configuration fails with a problem naming the variable, and leaks no secret."""
    problems = _problems(env)
    assert any(all(f in p for f in fragments) for p in problems), problems


def test_every_problem_is_reported_at_once() -> None:
    """Problems from legacy and several indexed providers are all collected into one error."""
    problems = _problems(
        {
            "AIBRIDGE_ANTHROPIC_KEY": K1,
            "AIBRIDGE_BEDROCK_REGION": "us-east-1",
            f"{P}0_NAME": "Bad Name",
            f"{P}1_TYPE": "openai",
            f"{P}1_KEYS": f"{K2},{K2}",
            f"{P}3_TYPE": "nope",
        }
    )
    expected = ["mutually exclusive", "PROVIDER_2_*", "name must match", "type is required"]
    expected += ["keys[1] duplicate key", "type must be one of"]
    for fragment in expected:
        assert any(fragment in p for p in problems), (fragment, problems)


def test_indexes_are_ordered_numerically() -> None:
    """Index 10 comes after 2: 0..10 are contiguous, and a clash names the earlier index."""
    env = {f"{P}{n}_TYPE": "openai" for n in range(11)}
    env |= {f"{P}{n}_NAME": f"p{n}" for n in range(11)}
    assert [p.name for p in _plan(env).providers] == sorted(f"p{n}" for n in range(11))
    env[f"{P}10_NAME"] = "p2"
    (problem,) = _problems(env)
    assert problem.startswith(f"{P}10_*: duplicate NAME 'p2' (already used by {P}2_*)")


def test_legacy_openai_key_seeds_openai_with_default_base_url() -> None:
    """A legacy OpenAI key seeds a provider named openai at the default base URL."""
    plan = _plan({"AIBRIDGE_OPENAI_KEY": K1})
    assert plan.providers == (
        ProviderSpec(
            name="openai",
            type="openai",
            display_name="openai",
            base_url=TYPES["openai"].default_base_url,
            keys=(K1,),
        ),
    )
    assert plan.sources == {"openai": "AIBRIDGE_OPENAI_*"}


def test_legacy_openai_base_url_is_used() -> None:
    """A legacy OpenAI base URL overrides the default."""
    env = {"AIBRIDGE_OPENAI_KEY": K1, "AIBRIDGE_OPENAI_BASE_URL": "https://gw.example/v1/"}
    assert _only(env).base_url == "https://gw.example/v1/"


def test_legacy_base_url_without_key_seeds_nothing_and_warns() -> None:
    """A legacy base URL without its key seeds nothing, with a warning naming both variables."""
    plan = _plan({"AIBRIDGE_OPENAI_BASE_URL": "https://gw.example/v1/"})
    assert plan.providers == ()
    assert any(
        "AIBRIDGE_OPENAI_BASE_URL" in w and "AIBRIDGE_OPENAI_KEY" in w for w in plan.warnings
    )


def test_legacy_anthropic_key_seeds_anthropic() -> None:
    """A legacy Anthropic key seeds an anthropic provider at the default base URL."""
    provider = _only({"AIBRIDGE_ANTHROPIC_KEY": K1})
    assert (provider.name, provider.type, provider.base_url) == (
        "anthropic",
        "anthropic",
        TYPES["anthropic"].default_base_url,
    )
    assert provider.keys == (K1,)


def test_bedrock_model_defaults_alone_do_not_make_bedrock() -> None:
    """Bedrock model settings next to a legacy Anthropic key neither conflict nor make Bedrock."""
    env = {"AIBRIDGE_ANTHROPIC_KEY": K1, "AIBRIDGE_BEDROCK_MODEL": "m"}
    provider = _only(env)
    assert (provider.type, provider.bedrock) == ("anthropic", None)


def test_legacy_bedrock_seeds_anthropic_named_bedrock_provider() -> None:
    """Legacy Bedrock region and credentials seed a bedrock provider named anthropic."""
    provider = _only({"AIBRIDGE_BEDROCK_REGION": "eu-west-1"} | _LEGACY_BEDROCK_CREDENTIALS)
    assert (provider.name, provider.type, provider.keys) == ("anthropic", "bedrock", ())
    assert provider.base_url == "https://bedrock-runtime.eu-west-1.amazonaws.com"
    assert provider.bedrock is not None
    assert provider.bedrock.model == DEFAULT_BEDROCK_MODEL
    assert provider.bedrock.small_fast_model == DEFAULT_BEDROCK_SMALL_FAST_MODEL
    assert provider.bedrock.access_key == AK
    assert provider.bedrock.access_key_secret == SK


def test_bedrock_region_is_read_from_a_standard_base_url() -> None:
    """A Bedrock base URL with a standard host supplies the region and is kept as base URL."""
    url = "https://bedrock-runtime.ap-south-1.amazonaws.com"
    provider = _only({"AIBRIDGE_BEDROCK_BASE_URL": url})
    assert provider.base_url == url
    assert provider.bedrock is not None
    assert provider.bedrock.region == "ap-south-1"


def test_indexed_defaults() -> None:
    """NAME defaults to TYPE, display name to the name, and base URL to the type's default."""
    env = {f"{P}0_TYPE": "openai", f"{P}1_TYPE": "Anthropic", f"{P}2_TYPE": "copilot"}
    plan = _plan(env)
    providers = {p.name: p for p in plan.providers}
    assert {n: (p.type, p.display_name, p.base_url) for n, p in providers.items()} == {
        "anthropic": ("anthropic", "anthropic", TYPES["anthropic"].default_base_url),
        "copilot": ("copilot", "copilot", "https://api.individual.githubcopilot.com"),
        "openai": ("openai", "openai", TYPES["openai"].default_base_url),
    }
    assert plan.sources["openai"] == f"{P}0_*"


def test_indexed_keys_are_trimmed_and_kept_in_order() -> None:
    """KEYS is split on commas, trimmed, and kept in env order; display name and base URL apply."""
    env = _idx(TYPE="openai-compat", NAME="local-llm", DISPLAY_NAME="Local LLM")
    env |= _idx(BASE_URL="http://127.0.0.1:11434/v1/", KEYS=f" {K2} ,{K1},{K3} ")
    provider = _only(env)
    assert provider.keys == (K2, K1, K3)
    assert (provider.display_name, provider.base_url) == ("Local LLM", "http://127.0.0.1:11434/v1/")


@pytest.mark.parametrize("var", [f"{P}0_KEY", "AIBRIDGE_OPENAI_KEY"])
def test_key_is_split_on_commas_like_keys(var: str) -> None:
    """KEY and the legacy key variables accept several comma-separated keys, as KEYS does."""
    env = {var: f"{K1}, {K2}"} | ({f"{P}0_TYPE": "openai"} if "PROVIDER" in var else {})
    assert _only(env).keys == (K1, K2)


@pytest.mark.parametrize(
    ("env", "ignored"),
    [
        ({"AIBRIDGE_ANTHROPIC_BASE_URL": "https://a.example/"}, "AIBRIDGE_ANTHROPIC_BASE_URL"),
        ({"AIBRIDGE_BEDROCK_MODEL": "m"}, "AIBRIDGE_BEDROCK_MODEL"),
        (
            {"AIBRIDGE_BEDROCK_REGION": "us-east-1", "AIBRIDGE_ANTHROPIC_BASE_URL": "https://a/"},
            "AIBRIDGE_ANTHROPIC_BASE_URL is ignored",
        ),
    ],
)
def test_legacy_settings_without_effect_warn(env: dict[str, str], ignored: str) -> None:
    """A legacy setting that configures nothing is named in a warning rather than dropped."""
    assert any(ignored in w for w in _plan(env).warnings)


def test_field_names_are_case_insensitive() -> None:
    """`_Name` and `_type` are read like `_NAME` and `_TYPE`."""
    provider = _only({f"{P}0_type": "openai", f"{P}0_Name": "mine"})
    assert (provider.name, provider.type) == ("mine", "openai")


def test_anthropic_with_bedrock_fields_becomes_bedrock() -> None:
    """An anthropic provider with Bedrock fields is a Bedrock provider with its settings."""
    provider = _only(
        _idx(
            TYPE="anthropic",
            BEDROCK_REGION="us-west-2",
            BEDROCK_MODEL="my-model",
            BEDROCK_ROLE_ARN="arn:aws:iam::123456789012:role/bedrock",
            BEDROCK_ACCESS_KEYS=AK,
            BEDROCK_ACCESS_KEY_SECRETS=SK,
        )
    )
    assert (provider.name, provider.type, provider.keys) == ("anthropic", "bedrock", ())
    assert provider.bedrock is not None
    assert provider.bedrock.model == "my-model"
    assert provider.bedrock.role_arn == "arn:aws:iam::123456789012:role/bedrock"
    assert provider.bedrock.access_key == AK


@pytest.mark.parametrize("prefix", ["CODER_AI_GATEWAY_", "CODER_AIBRIDGE_"])
def test_coder_prefixes_are_aliases(prefix: str) -> None:
    """The Coder spellings are read like AIBRIDGE_, and sources name the prefix used."""
    env = {f"{prefix}OPENAI_KEY": K1, f"{prefix}PROVIDER_0_TYPE": "anthropic"}
    env |= {"AIBRIDGE_DATA_DIR": "/tmp/x", "CODER_AI_GATEWAY_ENABLED": "true"}
    plan = _plan(env)
    assert [(p.name, plan.sources[p.name]) for p in plan.providers] == [
        ("anthropic", f"{prefix}PROVIDER_0_*"),
        ("openai", f"{prefix}OPENAI_*"),
    ]


def test_non_provider_settings_are_ignored() -> None:
    """Other AIBRIDGE_* settings are neither seeding inputs nor warned about."""
    env = {
        "AIBRIDGE_DATA_DIR": "/tmp/x",
        "AIBRIDGE_GRPC_LISTEN": "127.0.0.1:7443",
        "AIBRIDGE_ADMIN_TOKEN": K1,
        "AIBRIDGE_PROXY_LISTEN": ":8888",
        "AIBRIDGE_ENCRYPTION_KEYS": K2,
        "CODER_AI_GATEWAY_ALLOW_BYOK": "true",
    }
    assert _plan(env) == SeedPlan(providers=(), warnings=())


def test_unknown_field_only_warns() -> None:
    """A misspelt field warns with the variable name and never echoes its value."""
    env = {f"{P}0_TYPE": "openai", f"{P}0_KYE": K1, "AIBRIDGE_OPENAI_KYE": K2}
    plan = _plan(env)
    assert [p.name for p in plan.providers] == ["openai"]
    for var in (f"{P}0_KYE", "AIBRIDGE_OPENAI_KYE"):
        assert any(var in w and "check for typos" in w for w in plan.warnings), plan.warnings


def test_the_recommended_seeding_path_warns_nothing_and_notes_how_seeding_works() -> None:
    """AIBRIDGE_OPENAI_KEY (as the README says) gives no warning, only a note naming the CLI."""
    plan = _plan({"AIBRIDGE_OPENAI_KEY": K1, f"{P}0_TYPE": "anthropic"})
    assert plan.warnings == ()
    assert "created at start-up" in plan.note
    assert "aibridge providers" in plan.note
    assert "deprecated" not in plan.note


def test_blank_values_count_as_unset() -> None:
    """Blank values are unset: no provider, no prefix mixing, no empty-TYPE error."""
    env = {"AIBRIDGE_OPENAI_KEY": " ", "CODER_AIBRIDGE_PROVIDER_0_TYPE": "", f"{P}0_NAME": ""}
    assert _plan(env) == SeedPlan(providers=(), warnings=())


def test_providers_are_sorted_by_name() -> None:
    """The plan lists providers by name, whatever their index or origin."""
    env = {"AIBRIDGE_OPENAI_KEY": K1, f"{P}0_TYPE": "openai", f"{P}0_NAME": "zeta"}
    env |= {f"{P}1_TYPE": "anthropic", f"{P}1_NAME": "alpha"}
    assert [p.name for p in _plan(env).providers] == ["alpha", "openai", "zeta"]


def test_indexed_provider_without_keys_is_allowed() -> None:
    """An OpenAI-style provider without keys is seeded with an empty key pool (BYOK only)."""
    assert _only({f"{P}0_TYPE": "openai"}).keys == ()


# --- property: never crash, never leak --------------------------------------------------------

_PREFIX = st.sampled_from(["AIBRIDGE_", "CODER_AI_GATEWAY_", "CODER_AIBRIDGE_", "aibridge_", ""])
_ODD_INDEX = st.sampled_from(["2", "10", "01", "x", "-1", "", "99999999", "0" * 5000])
_INDEX = st.sampled_from(["0", "1"]) | _ODD_INDEX
_FIELDS = ["TYPE", "NAME", "DISPLAY_NAME", "KEY", "KEYS", "BASE_URL", "BEDROCK_BASE_URL"]
_FIELDS += ["BEDROCK_REGION", "BEDROCK_ACCESS_KEY", "BEDROCK_ACCESS_KEY_SECRET", "BEDROCK_MODEL"]
_FIELDS += ["BEDROCK_ROLE_ARN", "BEDROCK_ACCESS_KEYS", "BEDROCK_ACCESS_KEY_SECRETS", "KYE", "name"]
_LEGACY = ["OPENAI_KEY", "OPENAI_BASE_URL", "ANTHROPIC_KEY", "ANTHROPIC_BASE_URL", "OPENAI_KYE"]
_LEGACY += ["BEDROCK_REGION", "BEDROCK_ACCESS_KEY", "BEDROCK_ACCESS_KEY_SECRET", "DATA_DIR"]
_SECRET = st.from_regex(r"\AsEcReT[0-9a-f]{12}\Z")
_URLS = ["https://x.example/v1/", "http://[::1", "https://h:99999/", "ftp://x/", "x", ""]
_URLS += ["https://bedrock-runtime.us-east-1.amazonaws.com", "http://[::1]:8080/"]
_PLAIN = st.one_of(
    st.sampled_from([*tuple(TYPES), "OpenAI", "nope", "my-prov", "Bad Name", " ", ""]),
    st.sampled_from([*_URLS, "us-east-1", "Virginia", "arn:aws:iam::123456789012:role/r"]),
    st.text(max_size=12).filter(lambda s: "sEcReT" not in s),
)


@st.composite
def _envs(draw: st.DrawFn) -> dict[str, str]:
    env: dict[str, str] = {}
    family = draw(_PREFIX)  # mostly one prefix: mixing stops parsing early
    for _ in range(draw(st.integers(0, 8))):
        prefix = draw(st.just(family) | _PREFIX)
        if draw(st.booleans()):
            var = f"{prefix}PROVIDER_{draw(_INDEX)}_{draw(st.sampled_from(_FIELDS))}"
        else:
            var = prefix + draw(st.sampled_from(_LEGACY))
        if var.upper().endswith(_SECRET_SUFFIXES):
            secrets = draw(st.lists(_SECRET, min_size=1, max_size=7))
            env[var] = draw(st.sampled_from([",", " , ", ",,"])).join(secrets)
        elif var.upper().endswith("URL"):
            env[var] = draw(st.sampled_from(_URLS) | _PLAIN)
        else:
            env[var] = draw(_PLAIN)
    return env


@settings(max_examples=300, deadline=None)
@given(_envs())
def test_parse_env_never_crashes_and_never_leaks(env: dict[str, str]) -> None:
    """Any env either parses or raises SeedConfigError, and no secret appears in any message."""
    try:
        plan = parse_env(env)
    except SeedConfigError as error:
        _assert_no_leak(env, [*error.problems, str(error), repr(error)])
    else:
        _assert_no_leak(env, [*plan.warnings, repr(plan)])
