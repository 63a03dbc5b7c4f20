"""Read the provider seed plan from environment variables (DESIGN §6), without any I/O.

`parse_env` reads one prefix family (`AIBRIDGE_`, or the Coder aliases `CODER_AI_GATEWAY_`
/ `CODER_AIBRIDGE_`). Only `OPENAI_*`, `ANTHROPIC_*`, `BEDROCK_*` (legacy single providers)
and `PROVIDER_<N>_*` (indexed providers) after the prefix are seeding inputs; every other
variable belongs to other settings and is ignored. All problems are collected and raised
once as `SeedConfigError`; unknown fields only warn. Messages name variables, never the
values of keys, secrets, URLs or unknown fields (only a NAME is quoted, in name clashes).

What a provider may hold is not decided here: each provider's variables become one
`aibridge.rulebook.ProviderSpec`, and every problem the rulebook finds is reported as
`VARIABLE: field message`, with the admin API's own field and message (`AIBRIDGE_PROVIDER_0_
KEYS: keys[1] is empty`). The seed keeps only what is about variables: prefixes, indexes,
spellings, KEY vs KEYS, name clashes with legacy variables, BASE_URL on Bedrock.

Decisions where DESIGN §6 and the Coder reference are silent or differ:
- A variable whose value is empty or blank counts as unset (also for prefix mixing and for
  index detection), so `FOO=` in a compose file clears a setting.
- The prefix is matched exactly; the rest of the name case-insensitively. Two spellings of
  the same variable (`..._NAME` and `..._Name`) are an error, not a silent pick.
- Mixing prefixes stops parsing after that one error: which family is meant is unknown, so
  further messages would be guesses. `AIBRIDGE_` is suggested as the one to keep.
- Indexes are canonical decimals: `01` is an error (it would alias `1`); huge ones too.
  An index whose only fields are unknown is no provider (the typo warning says why).
- An unknown TYPE is an error (Coder skips it with a warning): a silently missing provider
  surfaces much later, as 404s on the data plane.
- Duplicate NAMEs are always an error, even with identical fields (Coder dedupes those).
- Legacy Anthropic key plus Bedrock region/credentials is an error (the later Coder version
  only warns and drops the key).
- Bedrock needs a region, because requests are SigV4-signed for one: given only
  BEDROCK_BASE_URL, the region is read from a standard `bedrock-runtime.<region>` host,
  otherwise BEDROCK_REGION is required. BASE_URL on a Bedrock-backed provider is an error
  (BEDROCK_BASE_URL is the one that is used). No access key pair means the default AWS
  credential chain (or BEDROCK_ROLE_ARN).
- Coder's `BEDROCK_ACCESS_KEYS` / `BEDROCK_ACCESS_KEY_SECRETS` spellings are accepted as
  aliases holding exactly one value (a provider has one AWS key pair).
- KEY, and the legacy OPENAI_KEY / ANTHROPIC_KEY, split on commas and are checked like KEYS
  (real keys hold no commas). An indexed provider may have no keys
  (clients then bring their own); a legacy OpenAI base URL without a key seeds nothing and
  warns, as do other legacy settings that take no effect.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from aibridge.coder_options import CODER_PREFIXES
from aibridge.rulebook import (
    BEDROCK_FIELDS,
    TYPES,
    BedrockSpec,
    ProviderSpec,
    bedrock_backed,
    complete,
    validate,
)

PREFIXES = ("AIBRIDGE_", *CODER_PREFIXES)  # ours first: the one to keep

_SEED_GROUPS = ("OPENAI_", "ANTHROPIC_", "BEDROCK_", "PROVIDER_")
# Any of these makes a Bedrock provider; model names alone never do (Coder gives them defaults).
_BEDROCK_TRIGGERS = (
    "BEDROCK_BASE_URL",
    "BEDROCK_REGION",
    "BEDROCK_ACCESS_KEY",
    "BEDROCK_ACCESS_KEY_SECRET",
)
_BEDROCK_FIELDS = {*_BEDROCK_TRIGGERS, "BEDROCK_MODEL", "BEDROCK_SMALL_FAST_MODEL"}
_LEGACY_FIELDS = {"OPENAI_KEY", "OPENAI_BASE_URL", "ANTHROPIC_KEY", "ANTHROPIC_BASE_URL"}
_LEGACY_FIELDS |= _BEDROCK_FIELDS
_BEDROCK_ALIASES = {  # Coder's plural spellings
    "BEDROCK_ACCESS_KEYS": "BEDROCK_ACCESS_KEY",
    "BEDROCK_ACCESS_KEY_SECRETS": "BEDROCK_ACCESS_KEY_SECRET",
}
_INDEXED_FIELDS = {"TYPE", "NAME", "DISPLAY_NAME", "KEY", "KEYS", "BASE_URL", "BEDROCK_ROLE_ARN"}
_INDEXED_FIELDS |= _BEDROCK_FIELDS | _BEDROCK_ALIASES.keys()
_INDEX_RE = re.compile(r"0|[1-9][0-9]{0,5}", re.ASCII)  # no leading zeros: "01" would alias "1"


@dataclass(frozen=True)
class SeedPlan:
    # Validated and completed (defaults filled in), sorted by name: what the store inserts.
    providers: tuple[ProviderSpec, ...]
    warnings: tuple[str, ...]  # sentences naming the variable, never a value
    note: str = ""  # how seeding works, logged at info: the README recommends these variables
    # Provider name -> the variables it came from, for messages: "AIBRIDGE_PROVIDER_0_*".
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict)


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

    def bedrock(self) -> BedrockSpec | None:
        """The BEDROCK_* fields as the rulebook reads them; None when none is set."""
        spec = BedrockSpec(**{n: self.get(f"BEDROCK_{n.upper()}") for n in BEDROCK_FIELDS})
        return None if spec.is_empty() else spec

    def variables(self, base_field: str, key_field: str) -> dict[str, str]:
        """The variable behind each field of the rulebook (`keys[2]` is behind `keys`)."""
        return {
            "name": self.var("NAME"),
            "type": self.var("TYPE"),
            "display_name": self.var("DISPLAY_NAME"),
            "base_url": self.var(base_field),
            "keys": self.var(key_field),
            "bedrock": self.var("BEDROCK_*"),
            **{f"bedrock.{n}": self.var(f"BEDROCK_{n.upper()}") for n in BEDROCK_FIELDS},
        }


class _Parser:
    def __init__(self, prefix: str, seed_vars: Mapping[str, tuple[str, str]]) -> None:
        self.prefix = prefix
        self.vars = seed_vars
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.legacy_names: dict[str, str] = {}  # provider name -> the legacy variable behind it
        self.sources: dict[str, str] = {}  # provider name -> its variables, e.g. "..._0_*"

    def checked(
        self, spec: ProviderSpec, variables: Mapping[str, str], source: str
    ) -> ProviderSpec | None:
        """`spec` with its defaults, or None after reporting every problem the rulebook
        finds, each as `VARIABLE: field message` (the admin API's field and message, behind
        the variable that set the field)."""
        problems = validate(spec)
        for field_name, message in problems:
            self.problems.append(
                f"{variables[field_name.partition('[')[0]]}: {field_name} {message}"
            )
        if problems:
            return None
        done = complete(spec)
        if done.bedrock is not None:
            # A Bedrock-backed seed is stored as type bedrock (as Coder seeds it).
            done = replace(done, type="bedrock")
        self.sources[done.name] = source
        return done

    def legacy_keyed(self, f: _Fields, name: str) -> ProviderSpec | None:
        group = name.upper()
        self.legacy_names[name] = f.var(f"{group}_KEY")
        spec = ProviderSpec(
            name,
            name,
            display_name=name,
            base_url=f.get(f"{group}_BASE_URL"),
            keys=_split_keys(f.get(f"{group}_KEY")),
        )
        variables = f.variables(f"{group}_BASE_URL", f"{group}_KEY")
        return self.checked(spec, variables, f"{self.prefix}{group}_*")

    def legacy(self) -> list[ProviderSpec]:
        p = self.prefix
        for rest, (var, _) in self.vars.items():
            if rest not in _LEGACY_FIELDS and not rest.startswith("PROVIDER_"):
                self.warnings.append(f"ignoring unknown provider variable {var} (check for typos)")
        f = _Fields(p, {k: v for k, v in self.vars.items() if k in _LEGACY_FIELDS})
        seeds: list[ProviderSpec | None] = []
        if f.get("OPENAI_KEY"):
            seeds.append(self.legacy_keyed(f, "openai"))
        elif f.get("OPENAI_BASE_URL"):
            self.warnings.append(f"{p}OPENAI_BASE_URL is set without {p}OPENAI_KEY: seeds nothing")
        bedrock_vars = [f.var(x) for x in _BEDROCK_TRIGGERS if f.get(x)]
        if f.get("ANTHROPIC_KEY") and bedrock_vars:
            self.problems.append(
                f"{p}ANTHROPIC_KEY and {p}BEDROCK_* ({', '.join(bedrock_vars)}) are mutually "
                f"exclusive: unset {p}ANTHROPIC_KEY to seed a Bedrock provider, or the "
                f"{p}BEDROCK_* variables to seed an Anthropic one"
            )
            self.legacy_names["anthropic"] = f.var("ANTHROPIC_KEY")
        elif bedrock_vars:
            # Named "anthropic" so clients keep their /anthropic/... routes (as in Coder).
            src = self.legacy_names["anthropic"] = f"{p}BEDROCK_*"
            spec = ProviderSpec(
                "anthropic",
                "bedrock",
                display_name="anthropic",
                base_url=f.get("BEDROCK_BASE_URL"),
                bedrock=f.bedrock() or BedrockSpec(),
            )
            seeds.append(self.checked(spec, f.variables("BEDROCK_BASE_URL", "KEY"), src))
            if f.get("ANTHROPIC_BASE_URL"):
                self.warnings.append(
                    f"{p}ANTHROPIC_BASE_URL is ignored because {p}BEDROCK_* configures the "
                    f"anthropic provider; set {p}BEDROCK_BASE_URL instead"
                )
        elif f.get("ANTHROPIC_KEY"):
            seeds.append(self.legacy_keyed(f, "anthropic"))
        else:
            for field in ("ANTHROPIC_BASE_URL", "BEDROCK_MODEL", "BEDROCK_SMALL_FAST_MODEL"):
                if f.get(field):
                    self.warnings.append(
                        f"{f.var(field)} is set without {p}ANTHROPIC_KEY or {p}BEDROCK_REGION "
                        "(or BEDROCK_BASE_URL, or credentials): seeds nothing"
                    )
        return [seed for seed in seeds if seed is not None]

    def indexed(self) -> list[ProviderSpec]:
        p = f"{self.prefix}PROVIDER_"
        entries: dict[int, dict[str, tuple[str, str]]] = {}
        for rest, (var, value) in self.vars.items():
            if not rest.startswith("PROVIDER_"):
                continue
            index, sep, field = rest.removeprefix("PROVIDER_").partition("_")
            if not _INDEX_RE.fullmatch(index):
                self.problems.append(
                    f"{var}: provider index {index!r} must be a whole number without leading "
                    f"zeros, as in {p}0_TYPE, {p}1_TYPE, ..."
                )
            elif not sep or field not in _INDEXED_FIELDS:
                self.warnings.append(f"ignoring unknown provider field {var} (check for typos)")
            else:
                entries.setdefault(int(index), {})[field] = (var, value)
        missing = [n for n in range(max(entries, default=-1)) if n not in entries]
        if missing:
            shown = ", ".join(f"{p}{n}_*" for n in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            found = ", ".join(str(n) for n in sorted(entries))
            self.problems.append(
                f"provider indexes must be contiguous from 0: missing {shown}{more} "
                f"(found {found}); renumber the providers"
            )
        sources: dict[str, str] = {}  # name -> source of the first provider using it
        seeds = [self.entry(f"{p}{n}_", entries[n], sources) for n in sorted(entries)]
        return [seed for seed in seeds if seed is not None]

    def entry(
        self, var_prefix: str, items: dict[str, tuple[str, str]], sources: dict[str, str]
    ) -> ProviderSpec | None:
        src, before = f"{var_prefix}*", len(self.problems)
        self.unalias_bedrock(src, items)
        f = _Fields(var_prefix, items)
        ptype = f.get("TYPE").lower()
        name = f.get("NAME") or (ptype if ptype in TYPES else "")
        self.claim_name(src, f, name, sources)
        key_fields = [field for field in ("KEY", "KEYS") if field in items]
        if len(key_fields) == 2:
            self.problems.append(f"{src}: set only one of {f.var('KEY')} and {f.var('KEYS')}")
        key_field = key_fields[0] if key_fields else "KEYS"
        bedrock = f.bedrock()
        # A Bedrock-backed provider is sent to BEDROCK_BASE_URL (or its region's endpoint).
        backed = ptype in TYPES and bedrock_backed(TYPES[ptype], bedrock)
        base_field = "BEDROCK_BASE_URL" if backed else "BASE_URL"
        if backed and f.get("BASE_URL"):
            self.problems.append(
                f"{f.var('BASE_URL')} is not used by a Bedrock provider; set "
                f"{f.var('BEDROCK_BASE_URL')} instead"
            )
        spec = ProviderSpec(
            name=name,
            type=ptype,
            display_name=f.get("DISPLAY_NAME") or name,
            base_url=f.get(base_field),
            keys=_split_keys(f.get(key_field)),
            bedrock=bedrock,
        )
        seed = self.checked(spec, f.variables(base_field, key_field), src)
        return seed if len(self.problems) == before else None

    def unalias_bedrock(self, src: str, items: dict[str, tuple[str, str]]) -> None:
        """Coder's plural BEDROCK_ACCESS_KEYS spellings become ours (one value each)."""
        for alias, field in _BEDROCK_ALIASES.items():
            if alias in items and field in items:
                self.problems.append(
                    f"{src}: set only one of {items[field][0]} and {items[alias][0]}"
                )
            elif alias in items and "," in items[alias][1]:
                self.problems.append(
                    f"{items[alias][0]}: only one Bedrock access key pair per provider is supported"
                )
            if alias in items:
                items.setdefault(field, items.pop(alias))

    def claim_name(self, src: str, f: _Fields, name: str, sources: dict[str, str]) -> None:
        """`name` for the provider at `src`, unless a legacy variable or an earlier index has it."""
        if name in self.legacy_names:
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


def _split_keys(raw: str) -> tuple[str, ...]:
    """KEY/KEYS split on commas (real keys hold none); each part stripped."""
    return tuple(part.strip() for part in raw.split(",")) if raw else ()


def _seed_vars(
    environ: Mapping[str, str],
) -> tuple[dict[str, dict[str, tuple[str, str]]], list[str]]:
    """Non-blank seeding variables per prefix, keyed by the upper-cased rest of the name."""
    families: dict[str, dict[str, tuple[str, str]]] = {prefix: {} for prefix in PREFIXES}
    problems: list[str] = []
    for var, value in sorted(environ.items()):  # sorted: deterministic messages
        prefix = next((prefix for prefix in PREFIXES if var.startswith(prefix)), "")
        rest = var.removeprefix(prefix).upper()
        if prefix and rest.startswith(_SEED_GROUPS) and value.strip():
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
        problems.append(
            f"cannot mix {', '.join(f'{u}*' for u in used)} provider environment variables "
            f"(e.g. {examples}); consolidate onto one prefix, preferably {PREFIXES[0]}*"
        )
    if problems or not used:
        if problems:
            raise SeedConfigError(problems)
        return SeedPlan(providers=(), warnings=())
    parser = _Parser(used[0], families[used[0]])
    seeds = parser.legacy() + parser.indexed()
    if parser.problems:
        raise SeedConfigError(parser.problems)
    note = (
        f"seeding providers from {used[0]}* variables: a provider missing from the database "
        "is created at start-up; existing ones are changed with `aibridge providers`"
    )
    providers = tuple(sorted(seeds, key=lambda seed: seed.name))
    return SeedPlan(providers, tuple(parser.warnings), note, parser.sources)
