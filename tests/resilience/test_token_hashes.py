"""The offline attack of issue #11 (item 7) against real daemons: every token hash the data
plane holds (bridge and proxy snapshots and their cache files) is run through a dictionary.

The dictionary is generous to the attacker: ~10,000 common guesses plus the exact value of
every token that is not a member's (the bootstrap admin, bridge and proxy tokens, a second
owner, an auditor). Nothing is recovered: those hashes never reach the data plane, and the
member tokens that do are 256 random bits.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from aibridge.config.v1 import token_pb2
from aibridge.masking import sha256_hex
from data_plane import snapshot_cache
from tests.fixtures.services import ADMIN_TOKEN, BRIDGE_TOKEN, PROXY_TOKEN
from tests.fixtures.waits import eventually
from tests.resilience.harness import BRIDGE_MD, PROXY_MD, Admin, Procs, bridge_url

WORDS = [
    "admin", "administrator", "root", "password", "passw0rd", "secret", "token", "bridge",
    "proxy", "aibridge", "gateway", "letmein", "welcome", "changeme", "qwerty", "dragon",
    "monkey", "master", "owner", "auditor", "member", "test", "dev", "prod", "staging",
    "correct", "horse", "battery", "staple", "sunshine", "princess", "football", "shadow",
    "superman", "trustno1", "iloveyou", "openai", "anthropic", "claude", "coder",
]  # fmt: skip
SUFFIXES = ["", "1", "12", "123", "1234", "!", "2024", "2025", "2026", "-token", "_token"]
SEPARATORS = ["", "-", "_"]


def dictionary(known: list[str]) -> list[str]:
    """Common guesses (words, pairs of words, suffixes and case variants) plus `known`."""
    stems = [a + sep + b for a, b in itertools.product(WORDS, WORDS) for sep in SEPARATORS]
    guesses = {s + suffix for s in WORDS + stems[:900] for suffix in SUFFIXES}
    guesses |= {g.capitalize() for g in list(guesses)}
    return sorted(guesses) + known


async def test_dictionary_attack_on_data_plane_hashes_recovers_nothing(
    procs: Procs, sqlite_url: str, tmp_path: Path
) -> None:
    """A dictionary attack on every token hash of the bridge and proxy snapshots and cache files recovers no token."""
    service = await asyncio.to_thread(procs.config_service, sqlite_url)
    admin = Admin(service.ready["target"])
    try:
        member = await admin.create_token("alice")
        auditor = await admin.create_token("audrey", token_pb2.ROLE_AUDITOR)
        owner = await admin.create_token("ops", token_pb2.ROLE_OWNER)
        served = [await admin.snapshot(BRIDGE_MD), await admin.snapshot(PROXY_MD)]
    finally:
        await admin.close()
    bridge_cache, proxy_cache = tmp_path / "bridge.pb", tmp_path / "proxy.pb"
    bridge = await asyncio.to_thread(
        procs.bridge, service.ready["target"], AIBRIDGE_SNAPSHOT_CACHE=str(bridge_cache)
    )
    await asyncio.to_thread(
        procs.proxy,
        service.ready["target"],
        bridge_url(bridge),
        AIBRIDGE_SNAPSHOT_CACHE=str(proxy_cache),
    )
    await eventually(lambda: bridge_cache.exists() and proxy_cache.exists(), within=15)
    cached = [snapshot_cache.load(bridge_cache), snapshot_cache.load(proxy_cache)]
    hashes = {t.sha256 for snap in [*served, *cached] if snap for t in snap.gateway_tokens}
    assert sha256_hex(member) in hashes  # the attack has hashes to work on

    words = dictionary([ADMIN_TOKEN, BRIDGE_TOKEN, PROXY_TOKEN, auditor, owner])
    assert len(words) >= 10_000
    recovered = [w[:8] + "..." for w in words if sha256_hex(w) in hashes]
    assert recovered == []
    assert hashes == {sha256_hex(member)}
