"""Registers the admin services (providers, tokens) on a server."""

from __future__ import annotations

import grpc

from aibridge.config.v1 import provider_admin_service_pb2_grpc, token_admin_service_pb2_grpc
from config_service.auth import Authenticator
from config_service.servicers.providers import ProviderAdminServicer
from config_service.servicers.tokens import TokenAdminServicer
from config_service.snapshots.hub import SnapshotHub
from config_service.store.database import Database


def register(
    server: grpc.aio.Server,
    db: Database,
    hub: SnapshotHub,
    auth: Authenticator,
    allow_byok: bool,
) -> None:
    token_admin_service_pb2_grpc.add_TokenAdminServiceServicer_to_server(
        TokenAdminServicer(db, hub, auth), server
    )
    provider_admin_service_pb2_grpc.add_ProviderAdminServiceServicer_to_server(
        ProviderAdminServicer(db, hub, auth, allow_byok), server
    )
