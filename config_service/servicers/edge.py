"""The one place where errors become gRPC statuses.

ConfigError subclasses carry their status code and a caller-safe message. Anything
else is a bug: logged with its traceback and answered INTERNAL with a reference,
never with its text (which could carry data). A request body that does not parse is
answered INVALID_ARGUMENT by `MalformedRequests`, for every RPC on the server (grpcio
itself would answer UNKNOWN and log a traceback), naming the field that does not hold
together on the wire when one is found (`config_service.wire`: a packed fixed64 column of
a ragged length, text that is not UTF-8...).

`AuthenticateFirst` refuses a call from its metadata alone, before its request message
is read: an unauthenticated caller (no, unknown or revoked token), or one whose role may
not call a method that declares its action (`unary(action)`), never makes the service
receive, buffer or parse a body of up to the 4 MiB receive limit. What still arrives is
what HTTP/2 flow control lets a client send before the refusal reaches it: the stream's
window, which grpc-core's BDP probing grows (measured: 0.5 to 1.4 MiB of peak memory per
refused 4 MiB call, the most when an unknown token is looked up in the database, against
7.5 MiB when the body was read and parsed; about 13 KiB with `grpc.http2.bdp_probe` off),
held until the stream is reset.

Health and reflection answer anyone, so their streams (Health/Watch, ServerReflectionInfo)
are the only ones a caller without a token can hold open: at most MAX_OPEN_STREAMS at a
time per process, past which they are answered RESOURCE_EXHAUSTED. Without the cap an
anonymous client could hold all of the server's concurrent RPCs (MAX_CONCURRENT_RPCS) and
keep every daemon from watching.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from aibridge.logs import get_logger
from config_service.auth import Authenticator
from config_service.errors import ConfigError, Unavailable
from config_service.rbac import Action, Subject, authorize
from config_service.store.database import is_connection_error
from config_service.wire import malformed_field

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


def unary(action: Action | None = None) -> Callable[[Handler[R]], Handler[R]]:
    """Make a unary handler `(self, request, subject)` a gRPC method `(self, request,
    context)`: the caller is authenticated by the servicer's `_auth` (and, with `action`,
    authorized for it) before the handler reads the request, and every error is mapped to
    its status. Without `action` the store authorizes, scoped by the subject."""

    def wrap(fn: Handler[R]) -> Handler[R]:
        @functools.wraps(fn)
        async def wrapper(
            self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> R:
            try:
                subject: Subject = await self._auth.authenticate(context)
                if action is not None:
                    authorize(subject, action)
                return await fn(self, request, subject)
            except ConfigError as exc:
                await abort_for(exc, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await abort_for(exc, context)
            raise AssertionError("unreachable: abort raises")

        wrapper.edge_action = action  # type: ignore[attr-defined]  # for AuthenticateFirst
        return wrapper

    return wrap


# ------------------------------------------------------------------ malformed request bodies

Context = grpc.aio.ServicerContext[Any, Any]


class _Malformed:
    """What a request body that does not parse deserializes to: the field found
    malformed on the wire, when one is (`wire.malformed_field`)."""

    def __init__(self, found: tuple[str, str] | None) -> None:
        self.found = found


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    # A message class's FromString: the class says what the body should be.
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError:
            return _Malformed(malformed_field(descriptor, raw) if descriptor else None)

    return parse


def _boxed(parse: Callable[[bytes], Any]) -> Callable[[bytes], list[Any]]:
    # The request of a unary-stream call, in a list the guard empties: grpc.aio's frames
    # hold what the deserializer returned for the stream's whole life (hours), and a parsed
    # message is ≈ 430 B (its object and protobuf's arena); the empty list is 56.
    def box(raw: bytes) -> list[Any]:
        return [parse(raw)]

    return box


Method: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


_FACTORIES = {  # (request streaming, response streaming) -> handler factory
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _guard(method: str, handler: Any) -> Method:
    """The same handler, answering INVALID_ARGUMENT to a request that did not parse."""
    message = f"malformed request: the body is not a valid request message of {method}"
    streaming = bool(handler.request_streaming)
    inner: Callable[..., Any] = (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )

    async def check(request: Any, context: Context) -> None:
        if isinstance(request, _Malformed):
            if request.found is None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
            field, why = request.found
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {message} ({why})")

    async def checked(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        async for request in requests:
            await check(request, context)
            yield request

    # A unary-stream call's request comes boxed (`_boxed`): taken out here, so only the
    # handler holds it, for as long as it needs it.
    boxed = not streaming and bool(handler.response_streaming)

    async def arguments(request: Any, context: Context) -> Any:
        if streaming:
            return checked(request, context)
        if boxed:
            request = request.pop()
        await check(request, context)
        return request

    # The guard is of the servicer's kind: an async generator, or a coroutine (which
    # may stream with context.write, as grpcio's health Watch does).
    if inspect.isasyncgenfunction(inner):

        async def generate(request: Any, context: Context) -> AsyncIterator[Any]:
            async for response in inner(await arguments(request, context), context):
                yield response

        guarded: Callable[..., Any] = generate
    else:

        async def call(request: Any, context: Context) -> Any:
            return await inner(await arguments(request, context), context)

        guarded = call
    guarded.edge_action = getattr(inner, "edge_action", None)  # type: ignore[attr-defined]
    factory = _FACTORIES[streaming, bool(handler.response_streaming)]
    parse = _tolerant(handler.request_deserializer)
    return factory(guarded, _boxed(parse) if boxed else parse, handler.response_serializer)


class OncePerMethod(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """An interceptor that wraps each method's handler once: a method's handler never
    changes. `wraps` says which handlers it wraps; the others pass through as they are."""

    def __init__(self) -> None:
        self._wrapped: dict[str, Method] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Method]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Method:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None or not self.wraps(handler):
                return handler
            wrapped = self._wrapped[method] = self.wrap(method, handler)
        return wrapped

    def wraps(self, handler: Method) -> bool:
        raise NotImplementedError

    def wrap(self, method: str, handler: Method) -> Method:
        raise NotImplementedError


class MalformedRequests(OncePerMethod):
    """Every RPC answers INVALID_ARGUMENT, not UNKNOWN, to a body that does not parse."""

    def wraps(self, handler: Method) -> bool:
        return handler.request_deserializer is not None

    def wrap(self, method: str, handler: Method) -> Method:
        return _guard(method, handler)


# ------------------------------------------------------- refused before the body is read

# Answered to anyone, token or not: health checks and server reflection.
_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
MAX_OPEN_STREAMS = 1000  # of those, streams open at once (a monitor holds a few)


def _refusal(code: grpc.StatusCode, message: str) -> Method:
    """A handler that answers `code` without reading the request: request-streaming, so
    grpc hands it an iterator instead of receiving the message first."""

    async def refuse(requests: AsyncIterator[Any], context: Context) -> None:
        await context.abort(code, message)

    return grpc.stream_stream_rpc_method_handler(refuse)


def _behavior(handler: Method) -> Any:
    return (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )


def _replace(handler: Method, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Method:
    """The same kind of handler, with the same (de)serializers, of `wrap(its behaviour)`."""
    factory = _FACTORIES[bool(handler.request_streaming), bool(handler.response_streaming)]
    return factory(
        wrap(_behavior(handler)), handler.request_deserializer, handler.response_serializer
    )


class AuthenticateFirst(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Every call but health and reflection is authenticated from its metadata, and its
    role checked against the method's declared action, before its message is read.

    The handlers still authenticate (and authorize) for themselves: this guard only moves
    the refusal ahead of the body. `auth` is set once the database is open; the server
    takes no call before.
    """

    def __init__(self) -> None:
        self.auth: Authenticator | None = None
        self.open_streams = 0  # health and reflection streams open now
        self._counted: dict[str, Method] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Method]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Method:
        method = handler_call_details.method
        if method.startswith(_OPEN_PREFIXES):
            return await self._open(method, continuation, handler_call_details)
        if self.auth is None:
            return await continuation(handler_call_details)
        try:
            subject = await self.auth.authenticate_metadata(
                handler_call_details.invocation_metadata or ()
            )
        except Exception as exc:
            error = translate(exc)
            if error is None:
                ref = uuid.uuid4().hex[:12]
                log.error("unhandled error authenticating a call", ref=ref, exc_info=exc)
                return _refusal(grpc.StatusCode.INTERNAL, f"internal error (reference {ref})")
            return _refusal(error.code, error.message)
        handler = await continuation(handler_call_details)
        action = getattr(_behavior(handler), "edge_action", None) if handler else None
        if action is not None:
            try:
                authorize(subject, action)
            except ConfigError as exc:
                return _refusal(exc.code, exc.message)
        return handler

    async def _open(
        self,
        method: str,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Method]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Method:
        """A health or reflection method; its streams counted, within MAX_OPEN_STREAMS."""
        counted = self._counted.get(method)
        if counted is None:
            handler = await continuation(handler_call_details)
            if handler is None or not handler.response_streaming:
                return handler
            counted = self._counted[method] = _replace(handler, self._count)
        if self.open_streams >= MAX_OPEN_STREAMS:
            return _refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{MAX_OPEN_STREAMS} health and reflection streams are open on this "
                "config-service process, the most it holds; retry later",
            )
        return counted

    def _count(self, inner: Callable[..., Any]) -> Callable[..., Any]:
        """`inner` (a streaming behaviour) counted in `open_streams` while it runs."""
        if inspect.isasyncgenfunction(inner):

            async def generate(request: Any, context: Context) -> AsyncIterator[Any]:
                self.open_streams += 1
                try:
                    async for response in inner(request, context):
                        yield response
                finally:
                    self.open_streams -= 1

            return generate

        async def call(request: Any, context: Context) -> Any:
            self.open_streams += 1
            try:
                return await inner(request, context)
            finally:
                self.open_streams -= 1

        return call
