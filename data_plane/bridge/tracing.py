"""OpenTelemetry of the bridge: a SERVER span per forwarded call, a CLIENT span per
upstream attempt, and the GenAI client metrics. Imported only when telemetry is on.

The server span continues the client's W3C trace context (a proxy hop or an SDK that
sends `traceparent`) and follows the OTel GenAI semantic conventions on the intercepted
routes: `gen_ai.operation.name`, `gen_ai.provider.name` (and the older `gen_ai.system`),
request and response model, token usage and finish reasons, beside the gateway's own
`aibridge.*` attributes (provider, principal id, credential kind, attempts, outcome,
and `aibridge.request_id`, the X-AIBridge-Request-Id the client is answered with). Each
attempt's span context travels upstream as `traceparent`. Attributes are read from the
call as the forwarder leaves it (the one reading of usage, `usage.py`): no prompt,
completion, header value or key is ever put on a span.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from aibridge.telemetry import Telemetry
from data_plane.bridge.transport import Origin
from data_plane.bridge.upstream import UpstreamResponse

if TYPE_CHECKING:
    from data_plane.bridge.forward import Call

# gen_ai.provider.name of each provider type (semconv well-known values where they exist).
GENAI_PROVIDER = {
    "openai": "openai",
    "anthropic": "anthropic",
    "bedrock": "aws.bedrock",
    "azure": "azure.ai.openai",
    "google": "gcp.gemini",
}
# gen_ai.operation.name of each intercepted route (below /<provider>).
OPERATION = {
    "/v1/chat/completions": "chat",
    "/chat/completions": "chat",
    "/v1/responses": "chat",
    "/responses": "chat",
    "/v1/messages": "chat",
}
# The semantic conventions' advised bucket boundaries.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)  # fmt: skip
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)  # fmt: skip


def provider_system(call: Call) -> str:
    """gen_ai.provider.name: Bedrock-served providers are aws.bedrock whatever their type."""
    provider = call.provider
    if call.mode == "bedrock":
        return "aws.bedrock"
    return GENAI_PROVIDER.get(provider.type, provider.type)


def outcome(call: Call) -> str:
    """What became of the call, in one word (the forwarder's own, else by status)."""
    if call.outcome:
        return call.outcome
    status = call.status or 499
    if status == 499:
        return "client_gone"
    return "ok" if status < 400 else "upstream_status"


class BridgeTelemetry:
    """The bridge's tracer and GenAI histograms; `begin` opens a call's span."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.tracer = telemetry.tracer("aibridge.bridge")
        meter = telemetry.meter("aibridge.bridge")
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

    def begin(self, call: Call, headers: Iterable[tuple[bytes, bytes]]) -> CallSpan:
        """The call's SERVER span, a child of the trace context the request carries."""
        operation = OPERATION.get(call.path) if call.intercepted else None
        attributes: dict[str, AttributeValue] = {
            "http.request.method": call.method,
            "aibridge.provider.name": call.provider.name,
            "aibridge.provider.type": call.provider.type,
            "aibridge.route": call.route,
            "aibridge.principal.id": call.principal_id,
            "aibridge.credential.kind": call.mode,
            "aibridge.request_id": call.request_id,
        }
        if operation is not None:
            system = provider_system(call)
            attributes["gen_ai.operation.name"] = operation
            attributes["gen_ai.provider.name"] = system
            attributes["gen_ai.system"] = system
            if call.request_model:
                attributes["gen_ai.request.model"] = call.request_model
            name = f"{operation} {call.request_model}".rstrip()
        else:
            name = f"{call.method} {call.route}"
        span = self.tracer.start_span(
            name,
            context=self.telemetry.extract(headers),
            kind=SpanKind.SERVER,
            attributes=attributes,
        )
        return CallSpan(self, span, operation)


class CallSpan:
    """One call's span: `attempt` opens an upstream attempt, `finish` closes it all."""

    __slots__ = ("_owner", "_started", "operation", "span")

    def __init__(self, owner: BridgeTelemetry, span: Span, operation: str | None) -> None:
        self._owner = owner
        self.span = span
        self.operation = operation
        self._started = time.perf_counter()

    def attempt(self, call: Call, origin: Origin | None, path: str) -> Attempt:
        """A CLIENT span for one upstream request, and the headers that carry it on
        (`origin` None: the provider's base URL names the server, as for Bedrock)."""
        if origin is None:
            parts = urlsplit(call.provider.base_url)
            origin = (parts.scheme.encode() or b"https", parts.hostname or "bedrock", 443)
        scheme, host, port = origin
        owner = self._owner
        span = owner.tracer.start_span(
            f"{call.method} {host}",
            context=trace.set_span_in_context(self.span),
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": call.method,
                "server.address": host,
                "server.port": port,
                # Without the query: some providers take a key as a query parameter.
                "url.full": f"{scheme.decode()}://{host}:{port}{path}",
                "aibridge.attempt": call.attempts,
            },
        )
        return Attempt(span, owner.telemetry.inject(trace.set_span_in_context(span)))

    def finish(self, call: Call, tokens: dict[str, int]) -> None:
        """Set what the call came to on the span, end it, and record the GenAI metrics."""
        span = self.span
        status = call.status or 499
        result = outcome(call)
        attributes: dict[str, AttributeValue] = {
            "http.response.status_code": status,
            "aibridge.attempts": call.attempts,
            "aibridge.outcome": result,
        }
        error = None if status < 500 and status != 499 else result
        if error is not None:
            attributes["error.type"] = error
            span.set_status(Status(StatusCode.ERROR))
        operation = self.operation
        if operation is not None:
            if call.response_model:
                attributes["gen_ai.response.model"] = call.response_model
            if call.finish_reasons:
                attributes["gen_ai.response.finish_reasons"] = call.finish_reasons
            for kind, attribute in (("input", "input_tokens"), ("output", "output_tokens")):
                if kind in tokens:
                    attributes[f"gen_ai.usage.{attribute}"] = tokens[kind]
        span.set_attributes(attributes)  # one call: the SDK locks once
        span.end()
        if operation is not None:
            self._metrics(call, operation, tokens, error)

    def _metrics(
        self, call: Call, operation: str, tokens: dict[str, int], error: str | None
    ) -> None:
        system = provider_system(call)
        # The model label is the bounded one (model_labels): metric series stay few.
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": system,
            "gen_ai.request.model": call.model,
            "aibridge.provider.name": call.provider.name,
        }
        if error is not None:
            attributes["error.type"] = error
        owner = self._owner
        owner.duration.record(time.perf_counter() - self._started, attributes)
        for kind in ("input", "output"):
            if kind in tokens:
                owner.token_usage.record(tokens[kind], {**attributes, "gen_ai.token.type": kind})


class Attempt:
    """One upstream attempt's span; ended when its response is released, or on failure."""

    __slots__ = ("headers", "span")

    def __init__(self, span: Span, headers: list[tuple[bytes, bytes]]) -> None:
        self.span = span
        self.headers = headers

    def answered(self, response: UpstreamResponse) -> UpstreamResponse:
        """The response, its release now also ending the attempt's span."""
        span = self.span
        if response.status >= 500:
            span.set_attributes(
                {"http.response.status_code": response.status, "error.type": str(response.status)}
            )
            span.set_status(Status(StatusCode.ERROR))
        else:
            span.set_attribute("http.response.status_code", response.status)
        release = response.aclose

        async def aclose() -> None:
            try:
                await release()
            finally:
                span.end()

        response.aclose = aclose
        return response

    def failed(self, exc: BaseException) -> None:
        """The attempt got no response: the error's type (never its text) on the span."""
        self.span.set_attribute("error.type", type(exc).__name__)
        self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()
