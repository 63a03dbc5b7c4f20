"""A write's answer is true: saved -> OK, not saved -> the stated error, unknown -> said so.

The database is made slow for real (PostgreSQL: a deferred constraint trigger that sleeps at
COMMIT, a row or table lock held by another session) and the call deadline is shortened.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from sqlalchemy import Connection, create_engine, select, text
from structlog.testing import capture_logs

from aibridge.config.v1 import provider_admin_service_pb2 as pa
from aibridge.config.v1 import provider_admin_service_pb2_grpc as pa_grpc
from aibridge.config.v1 import provider_pb2, token_pb2
from aibridge.config.v1 import token_admin_service_pb2 as ta
from aibridge.config.v1 import token_admin_service_pb2_grpc as ta_grpc
from config_service.db.models import Provider
from config_service.rbac import Role
from tests.fixtures.services import Service, StartService
from tests.fixtures.waits import eventually


@pytest.fixture
def postgres_url(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL (a deferred trigger or a lock held by another session)")
    return database_url


@pytest.fixture
async def slow(start_service: StartService, postgres_url: str) -> Service:
    """A config service whose database calls have a 0.5 s deadline (and 0.5 s more for a COMMIT)."""
    service = await start_service()
    service.running.db.deadline = 0.5
    service.running.db.commit_wait = 0.5
    return service


@contextmanager
def session_on(database_url: str) -> Iterator[Connection]:
    """Another database session, in an open transaction for the duration."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn, conn.begin():
            yield conn
    finally:
        engine.dispose()


def slow_commit_of_tokens(database_url: str, seconds: float) -> None:
    """Every later transaction inserting a token sleeps `seconds` inside its COMMIT."""
    with session_on(database_url) as conn:
        conn.execute(
            text(
                "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON tokens "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()"
            )
        )


async def create_token(service: Service, name: str) -> ta.CreateTokenResponse:
    response = await ta_grpc.TokenAdminServiceStub(service.channel()).CreateToken(
        ta.CreateTokenRequest(principal_name=name, role=token_pb2.ROLE_AUDITOR),
        metadata=service.md_for(Role.OWNER),
    )
    assert isinstance(response, ta.CreateTokenResponse)
    return response


async def create_provider(service: Service, name: str) -> Any:
    return await pa_grpc.ProviderAdminServiceStub(service.channel()).CreateProvider(
        pa.CreateProviderRequest(
            name=name, type=provider_pb2.PROVIDER_TYPE_OPENAI, keys=[f"sk-test-{name}-0123456789"]
        ),
        metadata=service.md_for(Role.OWNER),
    )


async def token_works(service: Service, secret: str) -> bool:
    await pa_grpc.ProviderAdminServiceStub(service.channel()).ListProviders(
        pa.ListProvidersRequest(), metadata=service.md(secret)
    )
    return True


def provider_names(service: Service) -> set[str]:
    with service.running.db.read() as session:
        return {p.name for p in session.execute(select(Provider)).scalars()}


async def test_commit_slower_than_the_deadline_is_answered_as_saved(
    slow: Service, postgres_url: str
) -> None:
    """A COMMIT that started before the deadline and finishes after it is answered OK, with the secret."""
    slow.running.db.commit_wait = 5.0
    slow_commit_of_tokens(postgres_url, 1.5)
    response = await create_token(slow, "slow-commit")
    assert response.secret
    assert await token_works(slow, response.secret)


async def test_commit_that_never_confirms_says_the_outcome_is_unknown(
    slow: Service, postgres_url: str
) -> None:
    """A COMMIT still running past the deadline and the commit wait is UNAVAILABLE "may or may not have been saved", never "nothing was changed"."""
    slow_commit_of_tokens(postgres_url, 3)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await create_token(slow, "never-confirmed")
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "may or may not have been saved" in str(failed.value.details())
    assert "nothing was changed" not in str(failed.value.details())


async def test_write_abandoned_before_commit_is_never_saved(
    slow: Service, postgres_url: str
) -> None:
    """A write still waiting for the revision lock at the deadline is UNAVAILABLE "nothing was changed" and stays unsaved once the lock is free."""
    with session_on(postgres_url) as other:
        other.execute(text("SELECT revision FROM revision WHERE id = 1 FOR UPDATE"))
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await create_provider(slow, "abandoned")
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "nothing was changed" in str(failed.value.details())
    slow.running.db.deadline = 5.0
    await create_provider(slow, "after")  # queued behind the abandoned transaction
    assert provider_names(slow) == {"after"}


@pytest.mark.parametrize(
    ("write", "blocked_table"),
    [("token", "providers"), ("provider", "tokens")],
)
async def test_snapshot_reload_failing_after_commit_still_answers_ok(
    slow: Service, postgres_url: str, write: str, blocked_table: str
) -> None:
    """When the write commits but the snapshot reload times out, the caller gets OK (a token's secret included), and the snapshot catches up by resync."""
    with session_on(postgres_url) as other:
        # The write does not touch this table; the snapshot reload reads it and waits.
        other.execute(text(f"LOCK TABLE {blocked_table} IN ACCESS EXCLUSIVE MODE"))
        with capture_logs() as logs:
            if write == "token":
                secret = (await create_token(slow, "reload-fails")).secret
            else:
                await create_provider(slow, "reload-fails")
    events = [entry["event"] for entry in logs]
    assert "snapshot reload after a committed write failed; catching up by resync" in events
    if write == "token":
        assert await token_works(slow, secret)
    else:
        assert "reload-fails" in provider_names(slow)
    committed = slow.running.db.revision()
    await eventually(lambda: slow.running.hub.revision >= committed, within=10)
