"""Read the provider seed plan from environment variables (DESIGN §6), without any I/O.

`parse_env` reads one prefix family (`AIBRIDGE_`, or the Coder aliases `CODER_AI_GATEWAY_`
/ `CODER_AIBRIDGE_`). Only `OPENAI_*`, `ANTHROPIC_*`, `BEDROCK_*` (legacy single providers)
and `PROVIDER_<N>_*` (indexed providers) after the prefix are seeding inputs; every other
variable belongs to other settings and is ignored. All problems are collected and raised
once as `SeedConfigError`; unknown fields only warn. Messages name variables, never the
values of keys, secrets, URLs or unknown fields (only TYPE, NAME and region are quoted).

Decisions where DESIGN §6 and the Coder reference are silent or differ:
- A variable whose value is empty or blank counts as unset (also for prefix mixing and for
  index detection), so `FOO=` in a compose file clears a setting.
- The prefix is matched exactly; the rest of the name case-insensitively. Two spellings of
  the same variable (`..._NAME` and `..._Name`) are an error, not a silent pick.
- Mixing prefixes stops parsing after that one error: which family is meant is unknown, so
  further messages would be guesses. `AIBRIDGE_` is suggested as the one to keep.
- Indexes are canonical decimals: `01` is an error (it would alias `1`); huge ones too.
- An unknown TYPE is an error (Coder skips it with a warning): a silently missing provider
  surfaces much later, as 404s on the data plane.
- Duplicate NAMEs are always an error, even with identical fields (Coder dedupes those).
- Legacy Anthropic key plus Bedrock region/credentials is an error (the later Coder version
  only warns and drops the key); a legacy key is one value, never split on commas.
- Bedrock needs a region, because requests are SigV4-signed for one: given only
  BEDROCK_BASE_URL, the region is read from a standard `bedrock-runtime.<region>` host,
  otherwise BEDROCK_REGION is required. BASE_URL on a Bedrock-backed provider is an error
  (BEDROCK_BASE_URL is the one that is used). No access key pair means the default AWS
  credential chain (or BEDROCK_ROLE_ARN).
- Coder's `BEDROCK_ACCESS_KEYS` / `BEDROCK_ACCESS_KEY_SECRETS` spellings are accepted as
  aliases holding exactly one value (a provider has one AWS key pair).
- KEY splits on commas like KEYS (they are aliases). An indexed provider may have no keys
  (clients then bring their own); a legacy OpenAI base URL without a key seeds nothing and
  warns, as do other legacy settings that take no effect.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from aibridge.masking import Secret

PROVIDER_TYPES = (
    "openai",
    "anthropic",
    "bedrock",
    "azure",
    "google",
    "openai-compat",
    "openrouter",
    "vercel",
    "copilot",
)
NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1/"
DEFAULT_ANTHROPIC_BASE_URL = "https://api.anthropic.com/"
DEFAULT_COPILOT_BASE_URL = "https://api.individual.githubcopilot.com"
DEFAULT_BEDROCK_MODEL = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
DEFAULT_BEDROCK_SMALL_FAST_MODEL = "global.anthropic.claude-haiku-4-5-20251001-v1:0"
MAX_KEYS = 5
PREFIXES = ("AIBRIDGE_", "CODER_AI_GATEWAY_", "CODER_AIBRIDGE_")

_SEED_GROUPS = ("OPENAI_", "ANTHROPIC_", "BEDROCK_", "PROVIDER_")
_LEGACY_FIELDS = frozenset(
    {"OPENAI_KEY", "OPENAI_BASE_URL", "ANTHROPIC_KEY", "ANTHROPIC_BASE_URL"}
    | {f"BEDROCK_{f}" for f in ("BASE_URL", "REGION", "ACCESS_KEY", "ACCESS_KEY_SECRET")}
    | {"BEDROCK_MODEL", "BEDROCK_SMALL_FAST_MODEL"}
)
_BEDROCK_ALIASES = {
    "BEDROCK_ACCESS_KEYS": "BEDROCK_ACCESS_KEY",
    "BEDROCK_ACCESS_KEY_SECRETS": "BEDROCK_ACCESS_KEY_SECRET",
}
_INDEXED_FIELDS = frozenset(
    {"TYPE", "NAME", "DISPLAY_NAME", "KEY", "KEYS", "BASE_URL", "BEDROCK_ROLE_ARN"}
    | (_LEGACY_FIELDS - {"OPENAI_KEY", "OPENAI_BASE_URL", "ANTHROPIC_KEY", "ANTHROPIC_BASE_URL"})
    | _BEDROCK_ALIASES.keys()
)
_BEDROCK_ENDPOINT = (
    "BEDROCK_BASE_URL",
    "BEDROCK_REGION",
    "BEDROCK_ACCESS_KEY",
    "BEDROCK_ACCESS_KEY_SECRET",
)
_BASE_URL_REQUIRED = frozenset({"azure", "google", "openai-compat", "openrouter", "vercel"})
_DEFAULT_BASE_URLS = {
    "openai": DEFAULT_OPENAI_BASE_URL,
    "anthropic": DEFAULT_ANTHROPIC_BASE_URL,
    "copilot": DEFAULT_COPILOT_BASE_URL,
}
_INDEX_RE = re.compile(r"[0-9]+", re.ASCII)
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$", re.ASCII)
_BEDROCK_HOST_RE = re.compile(r"^bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com$")
_ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/\S+$", re.ASCII)
_TYPES_TEXT = ", ".join(PROVIDER_TYPES)


@dataclass(frozen=True)
class BedrockSeed:
    region: str
    model: str
    small_fast_model: str
    access_key: Secret | None
    access_key_secret: Secret | None
    role_arn: str = ""


@dataclass(frozen=True)
class ProviderSeed:
    name: str
    type: str
    display_name: str
    base_url: str
    keys: tuple[Secret, ...]  # in env order; empty for bedrock/copilot
    bedrock: BedrockSeed | None
    source: str  # e.g. "AIBRIDGE_PROVIDER_0_*", for messages


@dataclass(frozen=True)
class SeedPlan:
    providers: tuple[ProviderSeed, ...]  # sorted by name
    warnings: tuple[str, ...]  # masked sentences naming the variable


class SeedConfigError(Exception):
    """The environment's provider config is invalid; `problems` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid provider configuration in the environment:\n{lines}")


class _Fields:
    """One provider's variables by upper-case field name: (variable name, stripped value)."""

    def __init__(self, var_prefix: str, items: Mapping[str, tuple[str, str]]) -> None:
        self.var_prefix = var_prefix
        self.items = dict(items)

    def get(self, field: str) -> str:
        return self.items[field][1] if field in self.items else ""

    def var(self, field: str) -> str:
        return self.items[field][0] if field in self.items else self.var_prefix + field

    def has(self, field: str) -> bool:
        return field in self.items


class _Parser:
    def __init__(self, prefix: str, seed_vars: Mapping[str, tuple[str, str]]) -> None:
        self.prefix = prefix
        self.vars = seed_vars
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.legacy_names: dict[str, str] = {}  # provider name -> the legacy variable behind it

    def url(self, var: str, value: str) -> None:
        # The value is not echoed: URLs may carry credentials or tokens in userinfo or query.
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
            self.problems.append(
                f"{var} must be an absolute http(s) URL such as https://api.example.com/v1/"
            )

    def keys(self, var: str, raw: str) -> tuple[Secret, ...]:
        parts = [part.strip() for part in raw.split(",")]
        if len(parts) > MAX_KEYS:
            self.problems.append(f"{var}: too many keys ({len(parts)}), maximum is {MAX_KEYS}")
        seen: dict[str, int] = {}
        for i, part in enumerate(parts):
            if not part:
                self.problems.append(f"{var}: key at index {i} is empty; remove the extra comma")
            elif part in seen:
                self.problems.append(
                    f"{var}: duplicate key at index {i} (same as index {seen[part]}); remove it"
                )
            else:
                seen[part] = i
        return tuple(Secret(part) for part in seen)

    def bedrock(self, src: str, f: _Fields) -> tuple[BedrockSeed | None, str]:
        """Validate Bedrock fields; return the settings and the upstream base URL."""
        region, base = f.get("BEDROCK_REGION"), f.get("BEDROCK_BASE_URL")
        access_key, secret = f.get("BEDROCK_ACCESS_KEY"), f.get("BEDROCK_ACCESS_KEY_SECRET")
        ok = True
        if bool(access_key) != bool(secret):
            given, missing = ("BEDROCK_ACCESS_KEY", "BEDROCK_ACCESS_KEY_SECRET")[
                :: 1 if access_key else -1
            ]
            self.problems.append(
                f"{src}: {f.var(given)} is set without {f.var(missing)}; set both, or neither "
                "to use the default AWS credential chain"
            )
            ok = False
        if base:
            self.url(f.var("BEDROCK_BASE_URL"), base)
            host = _BEDROCK_HOST_RE.match(urlsplit(base).hostname or "")
            region = region or (host.group(1) if host else "")
        if not region:
            self.problems.append(
                f"{src}: Bedrock needs {f.var('BEDROCK_REGION')} (requests are signed for a "
                f"region); {f.var('BEDROCK_BASE_URL')} alone only works with a standard "
                "bedrock-runtime.<region>.amazonaws.com host"
            )
            return None, ""
        if not _REGION_RE.match(region):
            self.problems.append(
                f"{f.var('BEDROCK_REGION')}: {region!r} is not an AWS region such as us-east-1"
            )
            ok = False
        role_arn = f.get("BEDROCK_ROLE_ARN")
        if role_arn and not _ROLE_ARN_RE.match(role_arn):
            self.problems.append(
                f"{f.var('BEDROCK_ROLE_ARN')} must be an IAM role ARN such as "
                "arn:aws:iam::123456789012:role/bedrock"
            )
            ok = False
        seed = BedrockSeed(
            region=region,
            model=f.get("BEDROCK_MODEL") or DEFAULT_BEDROCK_MODEL,
            small_fast_model=f.get("BEDROCK_SMALL_FAST_MODEL") or DEFAULT_BEDROCK_SMALL_FAST_MODEL,
            access_key=Secret(access_key) if access_key else None,
            access_key_secret=Secret(secret) if secret else None,
            role_arn=role_arn,
        )
        return (seed if ok else None), base or f"https://bedrock-runtime.{region}.amazonaws.com"

    def legacy(self) -> list[ProviderSeed]:
        p = self.prefix
        items = {k: v for k, v in self.vars.items() if not k.startswith("PROVIDER_")}
        for field, (var, _) in sorted(items.items()):
            if field not in _LEGACY_FIELDS:
                self.warnings.append(f"ignoring unknown provider variable {var} (check for typos)")
        f = _Fields(p, items)
        seeds: list[ProviderSeed] = []
        if f.get("OPENAI_KEY"):
            base = f.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL
            self.url(f.var("OPENAI_BASE_URL"), base)
            keys = (Secret(f.get("OPENAI_KEY")),)
            seeds.append(
                ProviderSeed("openai", "openai", "openai", base, keys, None, f"{p}OPENAI_*")
            )
            self.legacy_names["openai"] = f.var("OPENAI_KEY")
        elif f.has("OPENAI_BASE_URL"):
            self.warnings.append(
                f"{p}OPENAI_BASE_URL is set without {p}OPENAI_KEY, so it seeds nothing"
            )
        # Model names alone never make a Bedrock provider: they have defaults in Coder.
        bedrock_set = [f.var(x) for x in _BEDROCK_ENDPOINT if f.has(x)]
        if f.get("ANTHROPIC_KEY") and bedrock_set:
            self.problems.append(
                f"{p}ANTHROPIC_KEY and {p}BEDROCK_* ({', '.join(bedrock_set)}) are mutually "
                f"exclusive: unset {p}ANTHROPIC_KEY to seed a Bedrock provider, or the "
                f"{p}BEDROCK_* variables to seed an Anthropic one"
            )
            self.legacy_names["anthropic"] = f.var("ANTHROPIC_KEY")
        elif bedrock_set:
            src = f"{p}BEDROCK_*"
            settings, base = self.bedrock(src, f)
            if settings is not None:
                seeds.append(
                    ProviderSeed("anthropic", "bedrock", "anthropic", base, (), settings, src)
                )
            self.legacy_names["anthropic"] = src
            if f.has("ANTHROPIC_BASE_URL"):
                self.warnings.append(
                    f"{p}ANTHROPIC_BASE_URL is ignored because {p}BEDROCK_* configures the "
                    f"legacy anthropic provider; use {p}BEDROCK_BASE_URL"
                )
        elif f.get("ANTHROPIC_KEY"):
            base = f.get("ANTHROPIC_BASE_URL") or DEFAULT_ANTHROPIC_BASE_URL
            self.url(f.var("ANTHROPIC_BASE_URL"), base)
            keys = (Secret(f.get("ANTHROPIC_KEY")),)
            seeds.append(
                ProviderSeed(
                    "anthropic", "anthropic", "anthropic", base, keys, None, f"{p}ANTHROPIC_*"
                )
            )
            self.legacy_names["anthropic"] = f.var("ANTHROPIC_KEY")
        else:
            for field in ("ANTHROPIC_BASE_URL", "BEDROCK_MODEL", "BEDROCK_SMALL_FAST_MODEL"):
                if f.has(field):
                    self.warnings.append(
                        f"{f.var(field)} is set without {p}ANTHROPIC_KEY or "
                        f"{p}BEDROCK_REGION/BASE_URL/credentials, so it seeds nothing"
                    )
        return seeds

    def indexed(self) -> list[ProviderSeed]:
        p = f"{self.prefix}PROVIDER_"
        entries: dict[int, dict[str, tuple[str, str]]] = {}
        for rest, (var, value) in sorted(self.vars.items()):
            if not rest.startswith("PROVIDER_"):
                continue
            index, sep, field = rest[len("PROVIDER_") :].partition("_")
            if not _INDEX_RE.fullmatch(index):
                self.problems.append(
                    f"{var}: provider index {index!r} is not a whole number; "
                    f"use {p}<N>_<FIELD> with N = 0, 1, 2, ..."
                )
            elif (index != "0" and index.startswith("0")) or len(index) > 6:
                self.problems.append(
                    f"{var}: write the provider index as {p}<N>_ with N "
                    "a small number without leading zeros"
                )
            elif not sep or field not in _INDEXED_FIELDS:
                self.warnings.append(f"ignoring unknown provider field {var} (check for typos)")
            else:
                entries.setdefault(int(index), {})[field] = (var, value)
        missing = [n for n in range(max(entries, default=-1)) if n not in entries]
        if missing:
            shown = ", ".join(f"{p}{n}_*" for n in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            self.problems.append(
                f"provider indexes must be contiguous from 0, but {shown}{more} are missing "
                f"(found {', '.join(str(n) for n in sorted(entries))}); renumber the providers"
            )
        seeds: list[ProviderSeed] = []
        sources: dict[str, str] = {}
        for n in sorted(entries):
            seed = self.entry(f"{p}{n}_", entries[n], sources)
            if seed is not None:
                seeds.append(seed)
        return seeds

    def entry(
        self, var_prefix: str, items: dict[str, tuple[str, str]], sources: dict[str, str]
    ) -> ProviderSeed | None:
        src = f"{var_prefix}*"
        problems_before = len(self.problems)
        for alias, field in _BEDROCK_ALIASES.items():
            if alias in items:
                if field in items:
                    self.problems.append(
                        f"{src}: set only one of {items[field][0]} and {items[alias][0]}"
                    )
                elif "," in items[alias][1]:
                    self.problems.append(
                        f"{items[alias][0]}: only one Bedrock access key pair per provider is "
                        "supported; set a single value"
                    )
                items.setdefault(field, items.pop(alias))
        f = _Fields(var_prefix, items)
        ptype = f.get("TYPE").lower()
        if not ptype:
            self.problems.append(f"{src}: {f.var('TYPE')} is required (one of: {_TYPES_TEXT})")
        elif ptype not in PROVIDER_TYPES:
            self.problems.append(
                f"{f.var('TYPE')}: unknown type {ptype!r}; valid types are: {_TYPES_TEXT}"
            )
        name = f.get("NAME") or (ptype if ptype in PROVIDER_TYPES else "")
        if f.has("NAME") and not NAME_RE.match(name):
            self.problems.append(
                f"{f.var('NAME')}: invalid provider name {name!r}; use lower-case letters, "
                "digits and single hyphens (e.g. my-openai)"
            )
        elif name in self.legacy_names:
            self.problems.append(
                f"{src}: provider name {name!r} conflicts with the legacy env var "
                f"{self.legacy_names[name]}; remove one or the other"
            )
        elif name in sources:
            self.problems.append(
                f"{src}: duplicate NAME {name!r} (already used by {sources[name]}); "
                f"set a distinct {f.var('NAME')}"
            )
        elif name:
            sources[name] = src
        keys: tuple[Secret, ...] = ()
        if f.has("KEY") and f.has("KEYS"):
            self.problems.append(f"{src}: set only one of {f.var('KEY')} and {f.var('KEYS')}")
        for field in ("KEY", "KEYS"):
            if f.has(field):
                keys = keys or self.keys(f.var(field), f.get(field))
        bedrock_vars = [
            var for field, (var, _) in sorted(items.items()) if field.startswith("BEDROCK_")
        ]
        key_var = f.var("KEYS") if f.has("KEYS") else f.var("KEY")
        if bedrock_vars and ptype in PROVIDER_TYPES and ptype not in ("anthropic", "bedrock"):
            self.problems.append(
                f"{src}: BEDROCK_* fields ({', '.join(bedrock_vars)}) are only supported with "
                f"TYPE anthropic or bedrock, not {ptype}; remove them"
            )
        elif bedrock_vars and keys:
            self.problems.append(
                f"{src}: {key_var} and BEDROCK_* fields are mutually exclusive (Bedrock "
                "authenticates with AWS credentials); remove one or the other"
            )
        elif ptype in ("bedrock", "copilot") and keys:
            why = "AWS credentials" if ptype == "bedrock" else "each user's GitHub token"
            self.problems.append(
                f"{key_var}: KEY/KEYS are not supported for TYPE {ptype} (it authenticates "
                f"with {why}); remove it"
            )
        is_bedrock = ptype == "bedrock" or (ptype == "anthropic" and bool(bedrock_vars))
        settings: BedrockSeed | None = None
        if is_bedrock:
            if not any(f.has(x) for x in _BEDROCK_ENDPOINT):
                self.problems.append(
                    f"{src}: TYPE {ptype} with Bedrock requires BEDROCK_* fields to be "
                    f"configured: set {f.var('BEDROCK_REGION')} (and optionally access keys)"
                )
                return None
            settings, base = self.bedrock(src, f)
            if f.has("BASE_URL"):
                self.problems.append(
                    f"{f.var('BASE_URL')} is not used by a Bedrock provider; set "
                    f"{f.var('BEDROCK_BASE_URL')} instead"
                )
        else:
            base = f.get("BASE_URL") or _DEFAULT_BASE_URLS.get(ptype, "")
            if f.has("BASE_URL"):
                self.url(f.var("BASE_URL"), base)
            elif ptype in _BASE_URL_REQUIRED:
                self.problems.append(
                    f"{f.var('BASE_URL')} is required for TYPE {ptype} (there is no default "
                    "upstream URL)"
                )
        if len(self.problems) > problems_before:
            return None
        return ProviderSeed(
            name=name,
            type="bedrock" if is_bedrock else ptype,
            display_name=f.get("DISPLAY_NAME") or name,
            base_url=base,
            keys=() if is_bedrock else keys,
            bedrock=settings,
            source=src,
        )


def _seed_vars(
    environ: Mapping[str, str],
) -> tuple[dict[str, dict[str, tuple[str, str]]], list[str]]:
    """Seeding variables per prefix family, keyed by the upper-cased rest of the name."""
    families: dict[str, dict[str, tuple[str, str]]] = {prefix: {} for prefix in PREFIXES}
    problems: list[str] = []
    for var, value in sorted(environ.items()):
        for prefix in PREFIXES:
            rest = var[len(prefix) :].upper() if var.startswith(prefix) else ""
            if rest.startswith(_SEED_GROUPS) and value.strip():
                family = families[prefix]
                if rest in family:
                    problems.append(
                        f"{family[rest][0]} and {var} set the same variable (names are matched "
                        "case-insensitively); keep one"
                    )
                family[rest] = (var, value.strip())
    return families, problems


def parse_env(environ: Mapping[str, str]) -> SeedPlan:
    """Validate the provider variables; raise `SeedConfigError` listing every problem."""
    families, problems = _seed_vars(environ)
    used = [prefix for prefix in PREFIXES if families[prefix]]
    if len(used) > 1:
        examples = " and ".join(next(iter(families[prefix].values()))[0] for prefix in used)
        prefixes = ", ".join(f"{prefix}*" for prefix in used)
        problems.append(
            f"cannot mix {prefixes} provider environment variables (e.g. {examples}); "
            f"consolidate onto one prefix, preferably {PREFIXES[0]}*"
        )
        raise SeedConfigError(problems)
    if not used:
        if problems:
            raise SeedConfigError(problems)
        return SeedPlan(providers=(), warnings=())
    parser = _Parser(used[0], families[used[0]])
    parser.problems.extend(problems)
    seeds = parser.legacy() + parser.indexed()
    if parser.problems:
        raise SeedConfigError(parser.problems)
    parser.warnings.insert(
        0,
        f"provider environment variables ({used[0]}*) are deprecated for provider management: "
        "they only seed providers at startup; manage providers with `aibridge providers`",
    )
    return SeedPlan(
        providers=tuple(sorted(seeds, key=lambda s: s.name)), warnings=tuple(parser.warnings)
    )
