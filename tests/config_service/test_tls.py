"""TLS and mTLS on the gRPC port, with real certificates."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from aibridge.config.v1 import config_service_pb2 as pb
from aibridge.config.v1 import config_service_pb2_grpc as pb_grpc
from config_service.rbac import Role
from tests.fixtures.certs import Pki, make_pki
from tests.fixtures.services import Service, StartService


async def tls_service(start_service: StartService, pki: Pki, mtls: bool = False) -> Service:
    """A config service serving TLS with the PKI's server certificate (mTLS: its CA for clients)."""
    env = {
        "AIBRIDGE_GRPC_TLS_CERT_FILE": str(pki.server_cert),
        "AIBRIDGE_GRPC_TLS_KEY_FILE": str(pki.server_key),
    }
    if mtls:
        env["AIBRIDGE_GRPC_TLS_CLIENT_CA_FILE"] = str(pki.ca_cert)
    return await start_service(**env)


def client_credentials(ca: Path, client: Pki | None = None) -> grpc.ChannelCredentials:
    """Trust `ca`; with `client`, present its client certificate."""
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=client.client_key.read_bytes(),
        certificate_chain=client.client_cert.read_bytes(),
    )


async def get_snapshot(
    service: Service, creds: grpc.ChannelCredentials, token: str | None = None
) -> pb.ProviderSnapshot:
    """The snapshot over TLS, with the bridge's token unless another is given."""
    async with grpc.aio.secure_channel(service.target, creds) as channel:
        stub = pb_grpc.ConfigServiceStub(channel)
        response = await stub.GetProviderSnapshot(
            pb.GetProviderSnapshotRequest(),
            metadata=service.md(token or service.tokens[Role.BRIDGE]),
            timeout=10,
        )
        return response.snapshot


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


async def test_tls_serves_clients_that_trust_the_ca(start_service: StartService, pki: Pki) -> None:
    """With a certificate and key set, the port speaks TLS to clients that trust its CA."""
    service = await tls_service(start_service, pki)
    snapshot = await get_snapshot(service, client_credentials(pki.ca_cert))
    assert snapshot.version


async def test_tls_refuses_a_client_that_does_not_trust_the_ca(
    start_service: StartService, pki: Pki
) -> None:
    """A client verifying against another CA cannot connect."""
    service = await tls_service(start_service, pki)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await get_snapshot(service, client_credentials(pki.other_ca_cert))
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_mtls_requires_a_client_certificate(start_service: StartService, pki: Pki) -> None:
    """With a client CA set, a client without a certificate is refused and one with a certificate is served."""
    service = await tls_service(start_service, pki, mtls=True)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await get_snapshot(service, client_credentials(pki.ca_cert))
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    with_cert = client_credentials(pki.ca_cert, pki)
    snapshot = await get_snapshot(service, with_cert)
    assert snapshot.version


async def test_mtls_still_requires_a_token(start_service: StartService, pki: Pki) -> None:
    """A valid client certificate alone does not authenticate: the bearer token is still required."""
    service = await tls_service(start_service, pki, mtls=True)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await get_snapshot(
            service, client_credentials(pki.ca_cert, pki), "not-a-real-token-at-all-0000"
        )
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
