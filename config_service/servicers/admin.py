"""Registers the admin services (providers, tokens) and the usage service on a server."""

from __future__ import annotations

import grpc

from aibridge.config.v1 import (
    provider_admin_service_pb2_grpc,
    token_admin_service_pb2_grpc,
    usage_service_pb2_grpc,
)
from config_service.auth import Authenticator
from config_service.metrics import ConfigMetrics
from config_service.servicers.providers import ProviderAdminServicer
from config_service.servicers.tokens import TokenAdminServicer
from config_service.servicers.usage import UsageServicer
from config_service.snapshots.hub import SnapshotHub
from config_service.store.database import Database


def register(
    server: grpc.aio.Server,
    db: Database,
    hub: SnapshotHub,
    auth: Authenticator,
    allow_byok: bool,
    metrics: ConfigMetrics,
) -> None:
    token_admin_service_pb2_grpc.add_TokenAdminServiceServicer_to_server(
        TokenAdminServicer(db, hub, auth), server
    )
    provider_admin_service_pb2_grpc.add_ProviderAdminServiceServicer_to_server(
        ProviderAdminServicer(db, hub, auth, allow_byok), server
    )
    usage_service_pb2_grpc.add_UsageServiceServicer_to_server(
        UsageServicer(db, auth, metrics), server
    )
