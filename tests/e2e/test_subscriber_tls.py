"""The data plane follows a TLS / mTLS config service with real certificates."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.masking import Secret
from config_service.rbac import Role
from data_plane.subscriber import Subscriber, SubscriberConfig
from tests.fixtures.certs import make_pki
from tests.fixtures.services import StartService


async def follow(config: SubscriberConfig) -> cs.ProviderSnapshot:
    got: list[cs.ProviderSnapshot] = []

    async def apply(snapshot: cs.ProviderSnapshot) -> list[cs.ProviderError]:
        got.append(snapshot)
        return []

    subscriber = Subscriber(config, apply)
    task = asyncio.create_task(subscriber.run())
    try:
        await asyncio.wait_for(subscriber.applied.wait(), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return got[0]


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
async def test_subscriber_follows_over_tls(
    start_service: StartService, tmp_path: Path, mutual: bool
) -> None:
    """With the CA (and, for mTLS, a client certificate) the subscriber gets the bridge snapshot."""
    pki = make_pki(tmp_path / "pki")
    extra = {"AIBRIDGE_GRPC_TLS_CLIENT_CA_FILE": str(pki.ca_cert)} if mutual else {}
    service = await start_service(
        AIBRIDGE_GRPC_TLS_CERT_FILE=str(pki.server_cert),
        AIBRIDGE_GRPC_TLS_KEY_FILE=str(pki.server_key),
        AIBRIDGE_OPENAI_KEY="sk-tls-0123456789abcdefghij",
        **extra,
    )
    snapshot = await follow(
        SubscriberConfig(
            target=f"localhost:{service.running.port}",
            token=Secret(service.tokens[Role.BRIDGE]),
            node_id="tls-bridge",
            ca_file=pki.ca_cert,
            cert_file=pki.client_cert if mutual else None,
            key_file=pki.client_key if mutual else None,
        )
    )
    assert snapshot.providers[0].keys[0].secret == "sk-tls-0123456789abcdefghij"
