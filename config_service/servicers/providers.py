"""ProviderAdminService: list, get, create, update (field mask), soft delete, key add/delete.

The store authorizes and validates; this adapter converts messages, runs the store
in a worker thread and, after every write, refreshes the snapshot hub before it
answers, so the change is on every open WatchProviders stream by the time the
caller has its response (if that reload fails, the write is still answered as saved and
the hub catches up by resync). Responses are rendered in the metadata scope (masked key
hints), or the proxy scope for the proxy role: the admin API never returns a
plaintext secret, not even to the bridge.
"""

from __future__ import annotations

from typing import Any

import grpc

from aibridge.config.v1 import provider_admin_service_pb2 as pb
from aibridge.config.v1 import provider_admin_service_pb2_grpc as pb_grpc
from aibridge.config.v1 import provider_pb2
from aibridge.logs import get_logger
from aibridge.rulebook import BY_WIRE, BedrockSpec, ProviderSpec
from config_service.auth import Authenticator
from config_service.rbac import Role, Scope, Subject
from config_service.servicers.edge import unary
from config_service.snapshots import views
from config_service.snapshots.hub import SnapshotHub
from config_service.store import provider_input, providers
from config_service.store.database import Database
from config_service.store.records import ProviderRecord

log = get_logger("aibridge.config.providers")

Context = grpc.aio.ServicerContext[Any, Any]


def provider_type(value: int) -> str:
    """The store's type name for a wire enum value: "" when unspecified, and a name the
    store rejects (after authorizing the caller) for values this build does not know."""
    if value == provider_pb2.PROVIDER_TYPE_UNSPECIFIED:
        return ""
    known = BY_WIRE.get(value)
    return known.name if known is not None else f"#{value}"


def bedrock_input(message: pb.BedrockSettingsInput) -> BedrockSpec:
    return BedrockSpec(
        region=message.region,
        model=message.model,
        small_fast_model=message.small_fast_model,
        role_arn=message.role_arn,
        access_key=message.access_key,
        access_key_secret=message.access_key_secret,
    )


def new_provider(request: pb.CreateProviderRequest) -> ProviderSpec:
    return ProviderSpec(
        name=request.name,
        type=provider_type(request.type),
        display_name=request.display_name,
        base_url=request.base_url,
        enabled=not request.disabled,
        keys=tuple(request.keys),
        bedrock=bedrock_input(request.bedrock) if request.HasField("bedrock") else None,
    )


def provider_changes(request: pb.UpdateProviderRequest) -> provider_input.ProviderChanges:
    keys = tuple(
        provider_input.KeyInput(
            id=k.id if k.WhichOneof("key") == "id" else "",
            secret=k.secret if k.WhichOneof("key") == "secret" else "",
        )
        for k in request.keys
    )
    return provider_input.ProviderChanges(
        paths=tuple(request.update_mask.paths),
        display_name=request.display_name,
        base_url=request.base_url,
        enabled=request.enabled,
        keys=keys,
        bedrock=bedrock_input(request.bedrock) if request.HasField("bedrock") else None,
        etag=request.etag,
    )


class ProviderAdminServicer(pb_grpc.ProviderAdminServiceServicer):
    def __init__(
        self, db: Database, hub: SnapshotHub, auth: Authenticator, allow_byok: bool
    ) -> None:
        self._db = db
        self._hub = hub
        self._auth = auth
        self._allow_byok = allow_byok

    def _render(self, record: ProviderRecord, subject: Subject) -> provider_pb2.Provider:
        scope = Scope.PROXY if subject.role is Role.PROXY else Scope.METADATA
        return views.render(record, scope, *views.evaluate(record, self._allow_byok))

    async def _written(
        self, event: str, record: ProviderRecord, subject: Subject, **extra: object
    ) -> None:
        """A write is done: one log line (the provider, `extra`, its key count, the actor),
        then the subscribers are told."""
        log.info(
            event,
            provider=record.name,
            provider_id=record.id,
            **extra,
            keys=len(record.keys),
            actor=subject.name,
        )
        await self._hub.publish_write()

    @unary()
    async def ListProviders(
        self, request: pb.ListProvidersRequest, subject: Subject
    ) -> pb.ListProvidersResponse:
        records = await self._db.call(providers.list_providers, self._db, subject)
        return pb.ListProvidersResponse(providers=[self._render(r, subject) for r in records])

    @unary()
    async def GetProvider(
        self, request: pb.GetProviderRequest, subject: Subject
    ) -> pb.GetProviderResponse:
        record = await self._db.call(providers.get_provider, self._db, subject, request.id_or_name)
        return pb.GetProviderResponse(provider=self._render(record, subject))

    @unary()
    async def CreateProvider(
        self, request: pb.CreateProviderRequest, subject: Subject
    ) -> pb.CreateProviderResponse:
        spec = new_provider(request)
        record = await self._db.call(providers.create_provider, self._db, subject, spec)
        await self._written("provider created", record, subject, type=record.type)
        return pb.CreateProviderResponse(provider=self._render(record, subject))

    @unary()
    async def UpdateProvider(
        self, request: pb.UpdateProviderRequest, subject: Subject
    ) -> pb.UpdateProviderResponse:
        changes = provider_changes(request)
        record = await self._db.call(
            providers.update_provider, self._db, subject, request.id_or_name, changes
        )
        await self._written("provider updated", record, subject, fields=sorted(set(changes.paths)))
        return pb.UpdateProviderResponse(provider=self._render(record, subject))

    @unary()
    async def DeleteProvider(
        self, request: pb.DeleteProviderRequest, subject: Subject
    ) -> pb.DeleteProviderResponse:
        record = await self._db.call(
            providers.delete_provider, self._db, subject, request.id_or_name
        )
        log.info(
            "provider deleted", provider=record.name, provider_id=record.id, actor=subject.name
        )
        await self._hub.publish_write()
        return pb.DeleteProviderResponse()

    @unary()
    async def AddProviderKey(
        self, request: pb.AddProviderKeyRequest, subject: Subject
    ) -> pb.AddProviderKeyResponse:
        record = await self._db.call(
            providers.add_provider_key,
            self._db,
            subject,
            request.id_or_name,
            request.secret,
            request.etag,
        )
        await self._written("provider key added", record, subject, key_id=record.keys[-1].id)
        provider = self._render(record, subject)
        # A new key goes to the end of the pool (and only owners write: metadata scope).
        return pb.AddProviderKeyResponse(provider=provider, key=provider.keys[-1])

    @unary()
    async def DeleteProviderKey(
        self, request: pb.DeleteProviderKeyRequest, subject: Subject
    ) -> pb.DeleteProviderKeyResponse:
        record = await self._db.call(
            providers.delete_provider_key,
            self._db,
            subject,
            request.id_or_name,
            request.key_id,
            request.etag,
        )
        await self._written("provider key deleted", record, subject, key_id=request.key_id)
        return pb.DeleteProviderKeyResponse(provider=self._render(record, subject))
