"""TokenAdminService: create (secret returned once), list, revoke; who am I."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from aibridge.config.v1 import token_admin_service_pb2 as pb
from aibridge.config.v1 import token_admin_service_pb2_grpc as pb_grpc
from aibridge.config.v1 import token_pb2
from config_service.auth import Authenticator
from config_service.errors import InvalidArgument
from config_service.rbac import Role, Subject
from config_service.servicers.edge import unary
from config_service.snapshots.hub import SnapshotHub
from config_service.snapshots.snapshot import ROLE_TO_PROTO
from config_service.store import tokens
from config_service.store.database import Database

Context = grpc.aio.ServicerContext[Any, Any]
ROLE_FROM_PROTO = {v: k for k, v in ROLE_TO_PROTO.items()}


def token_proto(view: tokens.TokenView) -> token_pb2.Token:
    created = Timestamp()
    created.FromDatetime(view.created_at)
    proto = token_pb2.Token(
        id=view.id,
        principal_id=view.principal_id,
        principal_name=view.principal_name,
        role=ROLE_TO_PROTO[view.role],
        hint=view.hint,
        created_at=created,
    )
    if view.revoked_at is not None:
        proto.revoked_at.FromDatetime(view.revoked_at)
    return proto


def role_from_proto(value: int) -> Role:
    role: Role | None = ROLE_FROM_PROTO.get(value)  # type: ignore[call-overload]
    if role is None:
        raise InvalidArgument(
            "role", "must be one of ROLE_OWNER, ROLE_AUDITOR, ROLE_MEMBER, ROLE_BRIDGE, ROLE_PROXY"
        )
    return role


class TokenAdminServicer(pb_grpc.TokenAdminServiceServicer):
    def __init__(self, db: Database, hub: SnapshotHub, auth: Authenticator) -> None:
        self._db = db
        self._hub = hub
        self._auth = auth

    @unary()
    async def CreateToken(
        self, request: pb.CreateTokenRequest, subject: Subject
    ) -> pb.CreateTokenResponse:
        role = role_from_proto(request.role)
        view, secret = await self._db.call(
            tokens.create_token, self._db, subject, request.principal_name, role
        )
        await self._hub.publish_write()
        return pb.CreateTokenResponse(token=token_proto(view), secret=secret)

    @unary()
    async def ListTokens(
        self, request: pb.ListTokensRequest, subject: Subject
    ) -> pb.ListTokensResponse:
        views = await self._db.call(tokens.list_tokens, self._db, subject, request.include_revoked)
        return pb.ListTokensResponse(tokens=[token_proto(v) for v in views])

    @unary()
    async def RevokeToken(
        self, request: pb.RevokeTokenRequest, subject: Subject
    ) -> pb.RevokeTokenResponse:
        view = await self._db.call(tokens.revoke_token, self._db, subject, request.id)
        await self._hub.publish_write()
        return pb.RevokeTokenResponse(token=token_proto(view))

    @unary()
    async def WhoAmI(self, request: pb.WhoAmIRequest, subject: Subject) -> pb.WhoAmIResponse:
        # Authentication is the whole check: every role may learn who its own token is.
        if subject.role is None:  # only the service itself has no role, and it never calls
            raise AssertionError("a caller authenticated without a role")
        return pb.WhoAmIResponse(
            principal_id=subject.principal_id,
            principal_name=subject.name,
            role=ROLE_TO_PROTO[subject.role],
            token_id=subject.token_id,
        )
