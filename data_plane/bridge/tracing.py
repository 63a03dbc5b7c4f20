"""OpenTelemetry of the bridge: a SERVER span per provider request, a CLIENT span per
upstream attempt, and the GenAI client metrics. Imported only when telemetry is on.

The span is one more observer of the interception's lifecycle: opened when its capture
is made (continuing the client's W3C trace context: a proxy hop or an SDK that sends
`traceparent`), its attributes read at the end from the interception record the bridge
built (`interception/record.py`: provider, route, models, token usage, outcome,
credential kind, attempts, principal; ids and strings already bounded and clear of
secrets) and from the answer's reader (finish reasons). Intercepted routes follow the
OTel GenAI semantic conventions (`gen_ai.operation.name`, `gen_ai.provider.name` and the
older `gen_ai.system`, request and response model, `gen_ai.usage.*`, finish reasons);
`aibridge.request_id` is the record's id, the X-AIBridge-Request-Id the client got.
Each attempt's span context travels upstream as `traceparent`. No prompt, completion,
header value or key is ever put on a span.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from aibridge import recording
from aibridge.config.v1 import usage_pb2
from aibridge.rulebook import type_name
from aibridge.telemetry import Telemetry
from data_plane.bridge.model_labels import ModelLabels
from data_plane.bridge.upstream import UpstreamResponse
from data_plane.transport import Origin

if TYPE_CHECKING:
    from data_plane.bridge.forward import Call
    from data_plane.bridge.interception.record import Capture

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
OUTCOMES = recording.enum_names(usage_pb2.Outcome, "OUTCOME_")
CREDENTIALS = recording.enum_names(usage_pb2.CredentialKind, "CREDENTIAL_KIND_")
# Outcomes that are the gateway's or the upstream's failure (the span's status is ERROR
# for these when the status code is a 5xx too; a cancelled call is not an error).
_FAILURES = frozenset(
    {
        usage_pb2.Outcome.OUTCOME_UPSTREAM_ERROR,
        usage_pb2.Outcome.OUTCOME_GATEWAY_ERROR,
        usage_pb2.Outcome.OUTCOME_REFUSED_BREAKER,
        usage_pb2.Outcome.OUTCOME_REFUSED_POOL,
    }
)


class BridgeTelemetry:
    """The bridge's tracer and GenAI histograms; `begin` opens a request's span."""

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

    def begin(
        self, capture: Capture, method: str, headers: Iterable[tuple[bytes, bytes]]
    ) -> CallSpan:
        """The request's SERVER span, a child of the trace context the request carries;
        named and described once it is over (`CallSpan.finish`)."""
        span = self.tracer.start_span(
            method,
            context=self.telemetry.extract(headers),
            kind=SpanKind.SERVER,
            start_time=capture.started_ns,
            attributes={"http.request.method": method, "aibridge.request_id": capture.id},
        )
        return CallSpan(self, span, method)


class CallSpan:
    """One request's span: `attempt` opens an upstream attempt, `finish` closes it all."""

    __slots__ = ("_owner", "bedrock", "method", "span")

    def __init__(self, owner: BridgeTelemetry, span: Span, method: str) -> None:
        self._owner = owner
        self.span = span
        self.method = method
        self.bedrock = False  # served through Bedrock (gen_ai.provider.name aws.bedrock)

    def attempt(self, call: Call, origin: Origin | None, path: str) -> Attempt:
        """A CLIENT span for one upstream request, and the headers that carry it on
        (`origin` None: Bedrock, named by the provider's base URL)."""
        if origin is None:
            self.bedrock = True
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
                "aibridge.attempt": call.capture.attempts,
            },
        )
        return Attempt(span, owner.telemetry.inject(trace.set_span_in_context(span)))

    def finish(
        self,
        capture: Capture,
        record: usage_pb2.Interception | None,
        models: ModelLabels,
    ) -> None:
        """Describe the request from its record (None: it could not be attributed to a
        provider and a member, and only its status is known), end the span, and record
        the GenAI metrics of an intercepted route."""
        span = self.span
        if record is None:
            self._finish_unattributed(capture.status)
            return
        status = record.status_code
        outcome = OUTCOMES.get(record.outcome, "unspecified")
        operation = OPERATION.get(record.route)
        system = "aws.bedrock" if self.bedrock else _system(record.provider_type)
        attributes = _record_attributes(record, outcome)
        error = outcome if record.outcome in _FAILURES and status >= 500 else None
        if error is not None:
            attributes["error.type"] = error
            span.set_status(Status(StatusCode.ERROR))
        if operation is not None:
            attributes.update(_genai_attributes(record, capture, operation, system))
            span.update_name(f"{operation} {record.requested_model}".rstrip())
        else:
            span.update_name(f"{self.method} {record.provider_name}")
        span.set_attributes(attributes)  # one call: the SDK locks once
        ended = max(record.ended_at.ToNanoseconds(), capture.started_ns)
        span.end(end_time=ended)
        if operation is None:
            return
        # The model is the bounded label (model_labels): metric series stay few.
        metric: dict[str, AttributeValue] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": system,
            "gen_ai.request.model": models.label(record.provider_name, record.requested_model),
            "aibridge.provider.name": record.provider_name,
        }
        if error is not None:
            metric["error.type"] = error
        self._record_metrics(record, (ended - capture.started_ns) / 1e9, metric)

    def _finish_unattributed(self, status: int) -> None:
        span = self.span
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_attribute("error.type", str(status))
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def _record_metrics(
        self, record: usage_pb2.Interception, seconds: float, metric: dict[str, AttributeValue]
    ) -> None:
        owner = self._owner
        owner.duration.record(seconds, metric)
        if record.HasField("usage"):
            usage = record.usage
            for kind, count in (("input", usage.input_tokens), ("output", usage.output_tokens)):
                owner.token_usage.record(count, {**metric, "gen_ai.token.type": kind})


def _record_attributes(record: usage_pb2.Interception, outcome: str) -> dict[str, AttributeValue]:
    """The span attributes every attributed request has."""
    return {
        "http.response.status_code": record.status_code,
        "aibridge.provider.name": record.provider_name,
        "aibridge.provider.type": type_name(record.provider_type),
        "aibridge.route": record.route,
        "aibridge.principal.id": record.principal_id,
        "aibridge.credential.kind": CREDENTIALS.get(record.credential_kind, "none"),
        "aibridge.attempts": record.attempts,
        "aibridge.outcome": outcome,
        "aibridge.streamed": record.streamed,
        "aibridge.proxied": record.proxied,
    }


def _genai_attributes(
    record: usage_pb2.Interception, capture: Capture, operation: str, system: str
) -> dict[str, AttributeValue]:
    """The GenAI semantic-convention attributes of an intercepted route."""
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": system,
        "gen_ai.system": system,
    }
    if record.requested_model:
        attributes["gen_ai.request.model"] = record.requested_model
    if record.served_model:
        attributes["gen_ai.response.model"] = record.served_model
    reader = capture.reader
    if reader is not None and reader.finish_reasons:
        attributes["gen_ai.response.finish_reasons"] = tuple(reader.finish_reasons)
    if record.HasField("usage"):
        attributes["gen_ai.usage.input_tokens"] = record.usage.input_tokens
        attributes["gen_ai.usage.output_tokens"] = record.usage.output_tokens
    return attributes


def _system(provider_type: int) -> str:
    name = type_name(provider_type)
    return GENAI_PROVIDER.get(name, name)


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
