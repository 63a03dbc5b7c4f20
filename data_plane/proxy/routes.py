"""The proxy's routing table: which hosts to intercept, for which provider, and who may
use the proxy. Built from one snapshot, immutable, swapped with one assignment.

Hosts come from the providers' base URLs (lower-cased hostname). Providers are taken in
name order and the first claims a shared host; every later claimant is left out and
reported, so the conflict shows in ListSubscribers instead of routing silently to the
wrong provider. Disabled and ERROR providers are not intercepted (their traffic is
tunnelled like any other host's): the bridge would only answer 503 for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import provider_pb2
from aibridge.logs import get_logger
from aibridge.rulebook import BY_WIRE, type_name
from data_plane.gateway_auth import TokenTable, token_table

log = get_logger(__name__)
PS = provider_pb2.ProviderStatus


@dataclass(frozen=True)
class Route:
    """Where requests for one intercepted host go on the bridge."""

    provider: str
    provider_type: str
    base_path: str  # path of the provider's base URL, without the trailing slash
    bridge_prefix: str  # what the bridge expects in place of base_path ("/v1" or "")

    def bridge_path(self, path: str) -> str:
        """`/<provider>/...` for an original path (query included).

        A base URL with a deeper path (`https://openrouter.ai/api/v1/`) is mapped onto the
        bridge's route layout (`/<provider>/v1/...`), so such providers work through the
        proxy too; any other path is passed as it is and the bridge decides.
        """
        base = self.base_path
        if base and (path == base or path.startswith((base + "/", base + "?"))):
            path = self.bridge_prefix + path[len(base) :]
        if not path.startswith("/"):
            path = "/" + path
        return f"/{self.provider}{path}"


@dataclass(frozen=True)
class ProxyTable:
    version: str
    hosts: Mapping[str, Route] = field(default_factory=lambda: MappingProxyType({}))
    tokens: TokenTable = field(default_factory=lambda: MappingProxyType({}))
    # provider name -> (type, status shown in metrics: intercepted/disabled/error/excluded)
    providers: Mapping[str, tuple[str, str]] = field(default_factory=lambda: MappingProxyType({}))
    applied: bool = True

    def route(self, host: str) -> Route | None:
        return self.hosts.get(host.lower().rstrip("."))


EMPTY = ProxyTable(version="", applied=False)


def _hostname(base_url: str) -> str | None:
    try:
        parts = urlsplit(base_url)
        host = parts.hostname
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    return host.lower().rstrip(".")


def build_table(snapshot: cs.ProviderSnapshot) -> tuple[ProxyTable, list[cs.ProviderError]]:
    hosts: dict[str, Route] = {}
    providers: dict[str, tuple[str, str]] = {}
    errors: list[cs.ProviderError] = []

    def exclude(name: str, ptype: str, message: str) -> None:
        log.warning("provider not intercepted", provider_name=name, reason=message)
        providers[name] = (ptype, "excluded")
        errors.append(cs.ProviderError(provider_name=name, message=message))

    # The config service sends providers sorted by name; sort anyway, the rule depends on it.
    for p in sorted(snapshot.providers, key=lambda p: p.name):
        ptype = type_name(p.type)
        if p.status != PS.PROVIDER_STATUS_ENABLED:
            status = "disabled" if p.status == PS.PROVIDER_STATUS_DISABLED else "error"
            providers[p.name] = (ptype, status)
            continue
        ptype_rules = BY_WIRE.get(p.type)
        base_url = p.base_url  # the config service filled in the type's default
        if not base_url:
            # Only a Bedrock provider is enabled without one. Its clients speak Bedrock's
            # native API, which the bridge does not serve (it serves Bedrock in the
            # Anthropic format): nothing to intercept.
            providers[p.name] = (ptype, "not-intercepted")
            continue
        host = _hostname(base_url)
        if host is None:
            exclude(p.name, ptype, f"base URL {base_url!r} has no hostname: not intercepted")
            continue
        winner = hosts.get(host)
        if winner is not None:
            exclude(
                p.name,
                ptype,
                f"hostname {host!r} is claimed by provider {winner.provider!r}: "
                "the proxy routes that host to it, not to this provider",
            )
            continue
        base_path = urlsplit(base_url).path.rstrip("/")
        prefix = ptype_rules.routes.strip_prefix if ptype_rules is not None else ""
        hosts[host] = Route(p.name, ptype, base_path, prefix)
        providers[p.name] = (ptype, "intercepted")
    table = ProxyTable(
        version=snapshot.version,
        hosts=MappingProxyType(hosts),
        tokens=token_table(snapshot.gateway_tokens),
        providers=MappingProxyType(providers),
    )
    return table, errors
