"""The one place where errors become gRPC statuses.

ConfigError subclasses carry their status code and a caller-safe message. Anything
else is a bug: logged with its traceback and answered INTERNAL with a reference,
never with its text (which could carry data).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from aibridge.logs import get_logger
from config_service.errors import ConfigError, Unavailable
from config_service.store.database import is_connection_error

log = get_logger("aibridge.config.grpc")

R = TypeVar("R")
Handler = Callable[..., Awaitable[R]]


def translate(exc: BaseException) -> ConfigError | None:
    if isinstance(exc, ConfigError):
        return exc
    if is_connection_error(exc):
        return Unavailable("database unavailable; try again shortly")
    return None


async def abort_for(exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    error = translate(exc)
    if error is None:
        ref = uuid.uuid4().hex[:12]
        log.error("unhandled error in gRPC handler", ref=ref, exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error (reference {ref})")
    else:
        await context.abort(error.code, error.message)


def unary(fn: Handler[R]) -> Handler[R]:
    """Wrap a unary handler `(self, request, context)` with the error mapping."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> R:
        try:
            return await fn(self, request, context)
        except ConfigError as exc:
            await abort_for(exc, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_for(exc, context)
        raise AssertionError("unreachable: abort raises")

    return wrapper
