"""OpenTelemetry of the config service: a span per unary RPC, per snapshot rebuild, and
per snapshot sent on a watch stream. Imported only when telemetry is on.

A change is one trace: the admin RPC's span (continuing a caller's `traceparent`) is
current while the write is published, so the rebuild it triggers is its child. On
PostgreSQL the NOTIFY of that same commit may start the rebuild first: a rebuild with no
current span is counted as the write's when one waits to publish (`writing`), which is
why a rebuild's span is made once it is over (`rebuilt`). The rebuild's span context is
kept with the snapshot it built, and every watch stream that sends that snapshot opens
a short child span of it. Rebuilds no local write caused (another replica's NOTIFY, the
periodic revision check) start their own trace. Attributes name methods, versions and
nodes: never a request body, token or key.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import grpc.aio
from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode

from aibridge.telemetry import Telemetry
from config_service.servicers.edge import Method, OncePerMethod

RpcContext = grpc.aio.ServicerContext[Any, Any]


class ConfigTelemetry:
    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.tracer = telemetry.tracer("aibridge.config_service")
        self._writers: list[Context] = []  # writes waiting to publish (oldest first)

    def interceptor(self) -> RpcSpans:
        return RpcSpans(self)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """While a committed write waits to publish: a rebuild started by anything else
        (NOTIFY of that very commit, the revision check) is counted as the write's."""
        current = context.get_current()
        self._writers.append(current)
        try:
            yield
        finally:
            self._writers.remove(current)

    def rebuilt(
        self, started_ns: int, version: str, published: bool, previous: SpanContext | None
    ) -> SpanContext | None:
        """Record a rebuild that ran from `started_ns` until now; the span context of the
        rebuild that built the current snapshot (this one when it `published`).

        The span is made once the rebuild is over, so its parent can be the write it
        served: the current span (the RPC's), else a write waiting to publish. A rebuild
        that found nothing new links the one that built what it found.
        """
        parent = None
        if not trace.get_current_span().get_span_context().is_valid and self._writers:
            parent = self._writers[0]
        links = [Link(previous)] if not published and previous is not None else None
        span = self.tracer.start_span(
            "snapshot rebuild",
            context=parent,
            start_time=started_ns,
            links=links,
            attributes={
                "aibridge.snapshot.version": version,
                "aibridge.snapshot.published": published,
            },
        )
        span.end()
        return span.get_span_context() if published else previous

    def send(self, built: SpanContext | None, node_id: str, scope: str, version: str) -> Span:
        """A span for one snapshot sent on a stream: a child of the rebuild that built it."""
        parent = trace.set_span_in_context(trace.NonRecordingSpan(built)) if built else None
        return self.tracer.start_span(
            "snapshot send",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes={
                "aibridge.node_id": node_id,
                "aibridge.snapshot.scope": scope,
                "aibridge.snapshot.version": version,
            },
        )


def _status(rpc: RpcContext) -> grpc.StatusCode:
    code = rpc.code()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK


class RpcSpans(OncePerMethod):
    """A SERVER span around every unary RPC, current while its handler runs."""

    def __init__(self, owner: ConfigTelemetry) -> None:
        super().__init__()
        self._owner = owner

    def wraps(self, handler: Method) -> bool:
        # Streams (WatchProviders, health Watch) live for hours: their snapshots get
        # spans of their own (`send`), not one span for the stream's lifetime.
        return handler.unary_unary is not None

    def wrap(self, method: str, handler: Method) -> Method:
        owner = self._owner
        service, _, name = method.lstrip("/").rpartition("/")
        inner: Any = handler.unary_unary  # an async handler (grpc-stubs types the sync one)
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

        async def call(request: Any, rpc: RpcContext) -> Any:
            metadata = rpc.invocation_metadata() or ()
            carried = [
                (str(key).encode(), value.encode("latin-1"))
                for key, value in metadata
                if isinstance(value, str)
            ]
            with owner.tracer.start_as_current_span(
                f"{service}/{name}",
                context=owner.telemetry.extract(carried),
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,  # an exception's text may carry data
                set_status_on_exception=False,
            ) as span:
                try:
                    return await inner(request, rpc)
                finally:
                    code = _status(rpc)
                    span.set_attribute("rpc.grpc.status_code", code.value[0])
                    if code is not grpc.StatusCode.OK:
                        span.set_attribute("error.type", code.name)
                    if code in _SERVER_FAULTS:
                        span.set_status(Status(StatusCode.ERROR))

        return grpc.unary_unary_rpc_method_handler(
            call, handler.request_deserializer, handler.response_serializer
        )


# The codes that are the server's failure, not the caller's (OTel's gRPC conventions).
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
