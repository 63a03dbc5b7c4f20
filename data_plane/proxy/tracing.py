"""OpenTelemetry of the proxy: a span per CONNECT, and one per request it hands to the
bridge (MITM). Imported only when telemetry is on.

A CONNECT session may carry many requests (keep-alive), so each request's span starts
its own trace (or continues the `traceparent` the client sent inside the TLS session)
and is linked to its CONNECT span; its context travels to the bridge as `traceparent`,
making the bridge's span its child. No header value, token or body is put on a span.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from aibridge.telemetry import Telemetry, clean


class ProxyTelemetry:
    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.tracer = telemetry.tracer("aibridge.proxy")

    def connect(self, host: str, port: int, mode: str, principal_id: str) -> Span:
        """The span of one CONNECT session (`mode`: mitm or tunnel); end it when it closes."""
        return self.tracer.start_span(
            "CONNECT",
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": "CONNECT",
                "server.address": clean(host),
                "server.port": port,
                "aibridge.proxy.mode": mode,
                "aibridge.principal.id": principal_id,
            },
        )

    def request(
        self,
        session: Span | None,
        method: str,
        path: str,
        provider: str,
        principal_id: str,
        request_id: str,
        headers: Iterable[tuple[bytes, bytes]],
    ) -> tuple[Span, list[tuple[bytes, bytes]]]:
        """A MITM request's span, linked to its session, and the headers carrying it on."""
        links = [Link(session.get_span_context())] if session is not None else None
        span = self.tracer.start_span(
            f"{method} {provider}",
            context=self.telemetry.extract(headers),
            kind=SpanKind.SERVER,
            links=links,
            attributes={
                "http.request.method": method,
                # The path without its query: some providers accept keys as query parameters.
                "url.path": clean(path.partition("?")[0]),
                "aibridge.provider.name": provider,
                "aibridge.principal.id": principal_id,
                # The bridge keeps it as its record's id (X-AIBridge-Request-Id).
                "aibridge.request_id": request_id,
            },
        )
        return span, self.telemetry.inject(trace.set_span_in_context(span))

    @staticmethod
    def answered(span: Span, status: int, failed: str) -> None:
        """End a request's span with the status the client got (and the failure's kind)."""
        span.set_attribute("http.response.status_code", status)
        if failed:
            span.set_attribute("error.type", failed)
        if status >= 500 or failed:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
