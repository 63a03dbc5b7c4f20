"""TLS and mTLS on the gRPC port, with real certificates."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from aibridge.config.v1 import config_service_pb2 as pb
from aibridge.config.v1 import config_service_pb2_grpc as pb_grpc
from config_service.rbac import Role
from tests.fixtures.certs import make_pki
from tests.fixtures.services import StartService


async def get_snapshot(
    target: str, creds: grpc.ChannelCredentials, token: str
) -> pb.ProviderSnapshot:
    async with grpc.aio.secure_channel(target, creds) as channel:
        stub = pb_grpc.ConfigServiceStub(channel)
        response = await stub.GetProviderSnapshot(
            pb.GetProviderSnapshotRequest(),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )
        return response.snapshot


async def test_tls_serves_clients_that_trust_the_ca(
    start_service: StartService, tmp_path: Path
) -> None:
    """With a certificate and key set, the port speaks TLS to clients that trust its CA."""
    pki = make_pki(tmp_path / "pki")
    service = await start_service(
        AIBRIDGE_GRPC_TLS_CERT_FILE=str(pki.server_cert),
        AIBRIDGE_GRPC_TLS_KEY_FILE=str(pki.server_key),
    )
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca_cert.read_bytes())
    snapshot = await get_snapshot(service.target, creds, service.tokens[Role.BRIDGE])
    assert snapshot.version


async def test_tls_refuses_a_client_that_does_not_trust_the_ca(
    start_service: StartService, tmp_path: Path
) -> None:
    """A client verifying against another CA cannot connect."""
    pki = make_pki(tmp_path / "pki")
    service = await start_service(
        AIBRIDGE_GRPC_TLS_CERT_FILE=str(pki.server_cert),
        AIBRIDGE_GRPC_TLS_KEY_FILE=str(pki.server_key),
    )
    creds = grpc.ssl_channel_credentials(root_certificates=pki.other_ca_cert.read_bytes())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await get_snapshot(service.target, creds, service.tokens[Role.BRIDGE])
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_mtls_requires_a_client_certificate(
    start_service: StartService, tmp_path: Path
) -> None:
    """With a client CA set, a client without a certificate is refused and one with a certificate is served."""
    pki = make_pki(tmp_path / "pki")
    service = await start_service(
        AIBRIDGE_GRPC_TLS_CERT_FILE=str(pki.server_cert),
        AIBRIDGE_GRPC_TLS_KEY_FILE=str(pki.server_key),
        AIBRIDGE_GRPC_TLS_CLIENT_CA_FILE=str(pki.ca_cert),
    )
    no_cert = grpc.ssl_channel_credentials(root_certificates=pki.ca_cert.read_bytes())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await get_snapshot(service.target, no_cert, service.tokens[Role.BRIDGE])
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    with_cert = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert.read_bytes(),
        private_key=pki.client_key.read_bytes(),
        certificate_chain=pki.client_cert.read_bytes(),
    )
    snapshot = await get_snapshot(service.target, with_cert, service.tokens[Role.BRIDGE])
    assert snapshot.version


async def test_mtls_still_requires_a_token(start_service: StartService, tmp_path: Path) -> None:
    """A valid client certificate alone does not authenticate: the bearer token is still required."""
    pki = make_pki(tmp_path / "pki")
    service = await start_service(
        AIBRIDGE_GRPC_TLS_CERT_FILE=str(pki.server_cert),
        AIBRIDGE_GRPC_TLS_KEY_FILE=str(pki.server_key),
        AIBRIDGE_GRPC_TLS_CLIENT_CA_FILE=str(pki.ca_cert),
    )
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert.read_bytes(),
        private_key=pki.client_key.read_bytes(),
        certificate_chain=pki.client_cert.read_bytes(),
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await get_snapshot(service.target, creds, "not-a-real-token-at-all-0000")
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
