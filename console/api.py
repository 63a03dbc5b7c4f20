"""The console's calls to the config service, each with the signed-in user's own token.

One gRPC channel per console process; the token travels as per-call metadata, so the
config service authorizes every call exactly as it does the CLI's. gRPC errors become
the exceptions the pages render: a refused token ends the session, PERMISSION_DENIED
is a 403 page, INVALID_ARGUMENT names its field ("field: message", the rulebook's pair).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import grpc
import grpc.aio

from aibridge.client import ClientSettings
from aibridge.config.v1 import config_service_pb2_grpc as cs_grpc
from aibridge.config.v1 import provider_admin_service_pb2_grpc as pa_grpc
from aibridge.config.v1 import token_admin_service_pb2_grpc as ta_grpc
from aibridge.config.v1 import usage_service_pb2_grpc as us_grpc

TIMEOUT = 15.0
T = TypeVar("T")


class ApiError(Exception):
    """The config service refused or failed a call; `message` is safe to show."""

    status = 502

    def __init_subclass__(cls, status: int) -> None:
        """Each subclass names its HTTP status: `class NotFound(ApiError, status=404)`."""
        super().__init_subclass__()
        cls.status = status

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SignedOut(ApiError, status=401):
    """UNAUTHENTICATED: the token is unknown or revoked; the session ends."""


class Forbidden(ApiError, status=403): ...


class NotFound(ApiError, status=404): ...


class Conflict(ApiError, status=409):
    """ALREADY_EXISTS or FAILED_PRECONDITION: the form is shown again with the message."""


class Unavailable(ApiError, status=503): ...


class FieldError(ApiError, status=400):
    """INVALID_ARGUMENT: `field` is the request field the config service named."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.text = message


def field_error(details: str) -> FieldError:
    """Split the config service's "field: message" (config_service InvalidArgument)."""
    name, sep, message = details.partition(": ")
    if sep and name and " " not in name:
        return FieldError(name, message)
    return FieldError("", details)


def translate(exc: grpc.RpcError) -> ApiError:
    code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.aio.AioRpcError) else "") or ""
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return SignedOut(details or "the token was refused")
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return Forbidden(details)
    if code is grpc.StatusCode.NOT_FOUND:
        return NotFound(details)
    if code in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION):
        return Conflict(details)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return field_error(details)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"the config service cannot be reached or did not answer: {details}")
    return ApiError(f"{code.name.lower()}: {details}")


@dataclass
class Stubs:
    config: cs_grpc.ConfigServiceStub
    providers: pa_grpc.ProviderAdminServiceStub
    tokens: ta_grpc.TokenAdminServiceStub
    usage: us_grpc.UsageServiceStub


class Api:
    """The gRPC channel to the config service, opened in the serving event loop."""

    def __init__(self, client: ClientSettings) -> None:
        self.client = client
        self._channel: grpc.aio.Channel | None = None
        self._stubs: Stubs | None = None

    @property
    def stubs(self) -> Stubs:
        if self._stubs is None:
            credentials = self.client.credentials()
            target = self.client.target
            self._channel = (
                grpc.aio.insecure_channel(target)
                if credentials is None
                else grpc.aio.secure_channel(target, credentials)
            )
            self._stubs = Stubs(
                cs_grpc.ConfigServiceStub(self._channel),
                pa_grpc.ProviderAdminServiceStub(self._channel),
                ta_grpc.TokenAdminServiceStub(self._channel),
                us_grpc.UsageServiceStub(self._channel),
            )
        return self._stubs

    async def call(self, token: str, method: Callable[..., T], request: Any) -> T:
        """`method(request)` with `token` as the bearer; gRPC errors as ApiError.

        The stubs are typed for blocking channels (grpc-stubs); on this aio channel a call
        returns an awaitable of the same response type."""
        try:
            pending = method(
                request, metadata=(("authorization", f"Bearer {token}"),), timeout=TIMEOUT
            )
            return await cast(Awaitable[T], pending)
        except grpc.RpcError as exc:
            raise translate(exc) from None

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None
            self._stubs = None
