"""Order never depends on the database's collation.

On a PostgreSQL database with an en_US-style collation, SQL ORDER BY puts 'openai'
before 'open-router' (punctuation is ignored at the first level); the snapshot's
contract is code-point order. A real config service runs on a fresh database created
with such a collation (tests/fixtures/databases.py), through writes and a restart.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from aibridge.config.v1 import provider_admin_service_pb2 as ppb
from aibridge.config.v1 import provider_pb2 as pb
from aibridge.config.v1 import token_admin_service_pb2 as tpb
from tests.fixtures.databases import postgres_database
from tests.resilience.harness import ADMIN_MD, BRIDGE_MD, Admin, Procs, database_revision

NAMES = ["openai", "open-router", "open", "o-1", "o1"]
PRINCIPALS = ["alice", "Bob", "a-b", "ab"]


@pytest.fixture
def collated_url(request: pytest.FixtureRequest) -> Iterator[str]:
    base = str(request.config.getoption("--database-url") or "")
    if not base:
        pytest.skip("PostgreSQL not configured (AIBRIDGE_TEST_DATABASE_URL)")
    with postgres_database(base) as (url, collation):
        print(f"database collation: {collation}")
        yield url


def sql_order(url: str, values: list[str]) -> list[str]:
    """How the database itself orders `values` (its default collation)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT v FROM unnest(CAST(:values AS text[])) AS v ORDER BY v"),
                {"values": values},
            )
            return [str(v) for (v,) in rows]
    finally:
        engine.dispose()


async def test_provider_and_token_order_ignores_the_database_collation(
    collated_url: str, procs: Procs
) -> None:
    """Providers next to each other in collation and code-point order disagree: every write answers OK, the snapshot is in code-point order, and a restart serves it again."""
    # The premise: this database orders these names differently from code points.
    assert sql_order(collated_url, NAMES) != sorted(NAMES)
    assert sql_order(collated_url, PRINCIPALS) != sorted(PRINCIPALS)

    service = procs.config_service(collated_url)
    admin = Admin(service.ready["target"])
    try:
        for i, name in enumerate(NAMES):
            await admin.create_provider(
                name, pb.PROVIDER_TYPE_OPENAI, "", keys=[f"sk-collation-{i}-0123456789abcdef"]
            )
        for name in PRINCIPALS:
            await admin.create_token(name)
        snapshot = await admin.snapshot(BRIDGE_MD)
        assert [p.name for p in snapshot.providers] == sorted(NAMES)
        assert int(snapshot.version) == database_revision(collated_url)
        listed = await admin.providers.ListProviders(
            ppb.ListProvidersRequest(), metadata=ADMIN_MD, timeout=10
        )
        assert [p.name for p in listed.providers] == sorted(NAMES)
        tokens = await admin.tokens.ListTokens(tpb.ListTokensRequest(), metadata=ADMIN_MD)
        members = [t.principal_name for t in tokens.tokens if t.principal_name in PRINCIPALS]
        assert members == sorted(PRINCIPALS)
    finally:
        await admin.close()

    service.stop()
    restarted = procs.config_service(collated_url, data_dir="cs2")
    admin = Admin(restarted.ready["target"])
    try:
        again = await admin.snapshot(BRIDGE_MD)
        assert again.version == snapshot.version
        assert [p.name for p in again.providers] == sorted(NAMES)
    finally:
        await admin.close()
