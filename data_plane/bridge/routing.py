"""The routing table: every provider and gateway token of one snapshot, immutable.

`build_table` turns a snapshot into a table. A provider that cannot be built is left
out and reported (its requests answer 503 with the build error); the rest still serve.
A snapshot with enabled providers none of which could be built leaves the bridge not
ready (`not_ready` says why), so an orchestrator does not route to a bridge that
serves nothing.

BYOK is decided once, by the config service, and carried in the snapshot
(`ProviderSnapshot.allow_byok`); the bridge's own AIBRIDGE_ALLOW_BYOK can only take it
away on this bridge (`BuildContext.allow_byok`), never grant it.

Key pools and breakers are carried over from the previous table when the provider's
keys (or base URL, for breakers) are unchanged, so a snapshot swap forgets neither
cooldowns nor open breakers. The app swaps tables with one attribute assignment;
requests in flight keep theirs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import httpx

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import provider_pb2
from aibridge.logs import get_logger
from aibridge.rulebook import BY_WIRE, Family, type_name
from data_plane.bridge.breaker import BreakerSet, BreakerState
from data_plane.bridge.keypool import KeyPool
from data_plane.bridge.providers import Provider
from data_plane.bridge.settings import BreakerSettings
from data_plane.bridge.upstream import BEDROCK_UNAVAILABLE, AnthropicUpstream, BedrockFactory
from data_plane.errors import BuildError, KeyPoolError
from data_plane.gateway_auth import TokenTable, token_table

log = get_logger(__name__)
PS = provider_pb2.ProviderStatus


@dataclass(frozen=True)
class Unbuilt:
    """A provider of the snapshot the bridge could not build, and why."""

    type: str
    family: Family | None  # None: a provider type this bridge does not know
    error: str


@dataclass(frozen=True)
class RoutingTable:
    version: str
    providers: Mapping[str, Provider] = field(default_factory=lambda: MappingProxyType({}))
    tokens: TokenTable = field(default_factory=lambda: MappingProxyType({}))
    failed: Mapping[str, Unbuilt] = field(default_factory=lambda: MappingProxyType({}))
    applied: bool = True
    allow_byok: bool = False  # the snapshot's decision, and this bridge's own restriction
    not_ready: str = ""  # why the bridge serves nothing although providers are enabled

    @property
    def names(self) -> list[str]:
        """Every provider of the snapshot, built or not, sorted."""
        return sorted({*self.providers, *self.failed})

    @staticmethod
    def status_of(provider: Provider) -> str:
        if provider.status == PS.PROVIDER_STATUS_ENABLED:
            return "enabled"
        return "disabled" if provider.status == PS.PROVIDER_STATUS_DISABLED else "error"


EMPTY = RoutingTable(version="", applied=False)


@dataclass(frozen=True)
class BuildContext:
    allow_byok: bool  # False: this bridge refuses BYOK whatever the snapshot allows
    breaker: BreakerSettings
    http: httpx.AsyncClient
    bedrock_factory: BedrockFactory | None = None
    on_key_transition: Callable[[str, str], None] | None = None
    on_breaker_change: Callable[[str, BreakerState], None] | None = None


def allows_byok(snapshot: cs.ProviderSnapshot, ctx: BuildContext) -> bool:
    """The snapshot's BYOK decision (allowed when a config service predating it sent
    none), narrowed by this bridge's own setting."""
    decided = snapshot.allow_byok if snapshot.HasField("allow_byok") else True
    return decided and ctx.allow_byok


def build_provider(
    p: provider_pb2.Provider, previous: Provider | None, ctx: BuildContext, allow_byok: bool
) -> Provider:
    ptype = BY_WIRE.get(p.type)
    if ptype is None:
        raise BuildError(f"unsupported provider type: {type_name(p.type)!r}")
    tname, family = ptype.name, ptype.family
    if p.status != PS.PROVIDER_STATUS_ENABLED:
        return Provider(p.name, tname, family, p.base_url, p.status, p.status_reason)
    # ENABLED: the config service checked the base URL and the Bedrock settings
    # (`config_service.snapshots.views.evaluate`); only pools, breakers and clients are built.
    keys = tuple(k.secret for k in p.keys)
    if any(not k for k in keys):
        raise BuildError("keys carry no secret (is the bridge token of the bridge role?)")
    bedrock = _bedrock(p, ctx) if family is Family.ANTHROPIC and p.HasField("bedrock") else None
    if bedrock is None and family is not Family.COPILOT and not keys and not allow_byok:
        # The snapshot allowed BYOK here; this bridge's own setting takes it away.
        raise BuildError(f"{tname} provider has no api keys configured and BYOK is not enabled")
    pool = _pool(p.name, keys, previous, ctx) if keys and family is not Family.COPILOT else None
    breakers = _breakers(p, ptype.routes.failure_statuses, previous, ctx)
    return Provider(
        p.name, tname, family, p.base_url, p.status, p.status_reason, keys, pool, breakers, bedrock
    )


def _bedrock(p: provider_pb2.Provider, ctx: BuildContext) -> AnthropicUpstream:
    if ctx.bedrock_factory is None:
        raise BuildError(BEDROCK_UNAVAILABLE)
    try:
        return ctx.bedrock_factory(p, ctx.http)
    except ValueError as exc:
        raise BuildError(f"bedrock: {exc}") from exc


def _pool(
    name: str, keys: tuple[str, ...], previous: Provider | None, ctx: BuildContext
) -> KeyPool:
    """The previous pool when the keys are the same (its cooldowns carry over), else a new one."""
    if previous is not None and previous.pool is not None and previous.keys == keys:
        return previous.pool
    try:
        return KeyPool(name, keys, on_transition=ctx.on_key_transition)
    except KeyPoolError as exc:
        raise BuildError(f"key pool: {exc}") from exc


def _breakers(
    p: provider_pb2.Provider,
    failure_statuses: frozenset[int],
    previous: Provider | None,
    ctx: BuildContext,
) -> BreakerSet | None:
    """The previous breakers when the base URL and settings are the same (open ones stay
    open), else new ones; None when breakers are off."""
    if not ctx.breaker.enabled:
        return None
    same_upstream = previous is not None and previous.base_url == p.base_url
    kept = previous.breakers if previous is not None and same_upstream else None
    if kept is not None and kept.settings == ctx.breaker:
        return kept
    return BreakerSet(p.name, ctx.breaker, failure_statuses, on_change=ctx.on_breaker_change)


def build_table(
    snapshot: cs.ProviderSnapshot, previous: RoutingTable, ctx: BuildContext
) -> tuple[RoutingTable, list[cs.ProviderError]]:
    providers: dict[str, Provider] = {}
    failed: dict[str, Unbuilt] = {}
    errors: list[cs.ProviderError] = []
    allow_byok = allows_byok(snapshot, ctx)
    for p in snapshot.providers:
        try:
            if p.name in providers:
                raise BuildError("duplicate provider name")
            providers[p.name] = build_provider(p, previous.providers.get(p.name), ctx, allow_byok)
        except BuildError as exc:
            log.error(
                "skipping misconfigured provider",
                provider_name=p.name,
                provider_type=type_name(p.type),
                error=str(exc),
            )
            known = BY_WIRE.get(p.type)
            family = known.family if known is not None else None
            failed[p.name] = Unbuilt(type_name(p.type), family, str(exc))
            errors.append(cs.ProviderError(provider_name=p.name, message=str(exc)))
    enabled = [p for p in snapshot.providers if p.status == PS.PROVIDER_STATUS_ENABLED]
    not_ready = ""
    if enabled and not any(v.status == PS.PROVIDER_STATUS_ENABLED for v in providers.values()):
        log.warning(
            "all enabled providers failed to build; only disabled providers remain",
            version=snapshot.version,
            failed=len(errors),
        )
        not_ready = "no enabled provider could be built: " + "; ".join(
            f"{e.provider_name}: {e.message}" for e in errors
        )
    table = RoutingTable(
        version=snapshot.version,
        providers=MappingProxyType(providers),
        tokens=token_table(snapshot.gateway_tokens),
        failed=MappingProxyType(failed),
        allow_byok=allow_byok,
        not_ready=not_ready,
    )
    return table, errors
