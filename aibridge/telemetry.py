"""OpenTelemetry for every process: the tracer and meter providers, exporting over OTLP.

Off unless an OTLP endpoint is set (the standard `OTEL_*` variables, declared in
`aibridge.envconfig`): then `start` builds a tracer provider (batching spans to the
OTLP exporter, gRPC or HTTP, with the sampler the settings name) and a meter provider
(a periodic OTLP export), and returns a `Telemetry`. When off, `start` returns None and
nothing of OpenTelemetry is imported: every caller keeps `None` and checks it, so the
off path creates no span, attaches no context and loads no module.

The providers are the process's own objects, handed to what instruments itself (never
installed as globals), so several services in one test process keep their telemetry
apart. W3C trace context (`traceparent`, `tracestate`) is the one propagation format.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aibridge.envconfig import (
    OTEL_ENDPOINT,
    OTEL_METRIC_EXPORT_INTERVAL,
    OTEL_METRICS_ENDPOINT,
    OTEL_METRICS_EXPORTER,
    OTEL_METRICS_PROTOCOL,
    OTEL_PROTOCOL,
    OTEL_SDK_DISABLED,
    OTEL_SERVICE_NAME,
    OTEL_TRACES_ENDPOINT,
    OTEL_TRACES_EXPORTER,
    OTEL_TRACES_PROTOCOL,
    OTEL_TRACES_SAMPLER,
    OTEL_TRACES_SAMPLER_ARG,
    Values,
)
from aibridge.logs import get_logger

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import Meter, MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.trace import Tracer, TracerProvider

log = get_logger(__name__)
# The W3C trace-context headers: read from a request, written on the next hop.
TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})
_SIGNAL_PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics"}
MAX_ATTRIBUTE = 256  # characters of a client-given string kept in an attribute


@dataclass(frozen=True)
class TelemetrySettings:
    """Where each signal goes (None: not exported) and how traces are sampled."""

    service_name: str
    traces_endpoint: str | None
    traces_protocol: str
    metrics_endpoint: str | None
    metrics_protocol: str
    sampler: str
    sampler_arg: float
    metric_interval_ms: int

    @property
    def enabled(self) -> bool:
        return self.traces_endpoint is not None or self.metrics_endpoint is not None

    @classmethod
    def of(cls, v: Values, default_service: str) -> TelemetrySettings:
        """The settings as read; `default_service` names the process when
        OTEL_SERVICE_NAME does not."""
        disabled = v[OTEL_SDK_DISABLED]
        base = v[OTEL_ENDPOINT]
        protocol = v[OTEL_PROTOCOL]

        def endpoint(signal: str, given: str | None, exporter: str, proto: str) -> str | None:
            if disabled or exporter == "none":
                return None
            if given is not None:
                return given
            if base is None:
                return None
            # HTTP appends the signal's path to the base; gRPC takes the base as it is.
            return base + _SIGNAL_PATHS[signal] if proto == "http/protobuf" else base

        traces_protocol = v[OTEL_TRACES_PROTOCOL] or protocol
        metrics_protocol = v[OTEL_METRICS_PROTOCOL] or protocol
        return cls(
            service_name=v[OTEL_SERVICE_NAME] or default_service,
            traces_endpoint=endpoint(
                "traces", v[OTEL_TRACES_ENDPOINT], v[OTEL_TRACES_EXPORTER], traces_protocol
            ),
            traces_protocol=traces_protocol,
            metrics_endpoint=endpoint(
                "metrics", v[OTEL_METRICS_ENDPOINT], v[OTEL_METRICS_EXPORTER], metrics_protocol
            ),
            metrics_protocol=metrics_protocol,
            sampler=v[OTEL_TRACES_SAMPLER],
            sampler_arg=v[OTEL_TRACES_SAMPLER_ARG],
            metric_interval_ms=v[OTEL_METRIC_EXPORT_INTERVAL],
        )


def clean(value: str, limit: int = MAX_ATTRIBUTE) -> str:
    """A client-given string fit for an attribute: at most `limit` characters, valid
    UTF-8 (a lone surrogate would make the whole export batch fail to encode)."""
    cut = value[:limit]
    return cut.encode("utf-8", "replace").decode("utf-8")


class Telemetry:
    """This process's providers: `tracer(name)`, `meter(name)`, W3C propagation and
    `shutdown()` (which flushes what is still buffered)."""

    def __init__(self, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self._propagator = TraceContextTextMapPropagator()

    def tracer(self, name: str) -> Tracer:
        return self.tracer_provider.get_tracer(name)

    def meter(self, name: str) -> Meter:
        return self.meter_provider.get_meter(name)

    def extract(self, headers: Iterable[tuple[bytes, bytes]]) -> Context | None:
        """The trace context a request carries (traceparent/tracestate), or None."""
        carrier = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in headers
            if key in TRACE_HEADERS
        }
        return self._propagator.extract(carrier) if carrier else None

    def inject(self, context: Context | None = None) -> list[tuple[bytes, bytes]]:
        """The trace-context headers of `context` (default: the current one)."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context)
        return [(key.encode(), value.encode("latin-1")) for key, value in carrier.items()]

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Flush what is buffered and stop both providers, waiting at most `timeout_ms`
        (blocking); False when the export did not finish in time (a collector away: the
        SDK would wait out its own timeouts and retries, up to 30 s, so it is left to
        finish or die with the process on a daemon thread)."""

        def stop() -> None:
            for provider in (self.tracer_provider, self.meter_provider):
                close = getattr(provider, "shutdown", None)
                if close is not None:
                    close()

        worker = threading.Thread(target=stop, name="otel-shutdown", daemon=True)
        worker.start()
        worker.join(timeout_ms / 1000)
        if worker.is_alive():
            log.warning(
                "telemetry not all exported at shutdown: is the OTLP collector reachable?",
                waited_ms=timeout_ms,
            )
            return False
        return True


def _sampler(name: str, arg: float) -> Sampler:
    from opentelemetry.sdk.trace import sampling

    root: Sampler
    base = name.removeprefix("parentbased_")
    if base == "always_on":
        root = sampling.ALWAYS_ON
    elif base == "always_off":
        root = sampling.ALWAYS_OFF
    else:
        root = sampling.TraceIdRatioBased(arg)
    return sampling.ParentBased(root) if name.startswith("parentbased_") else root


def _span_exporter(protocol: str, endpoint: str) -> SpanExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # http:// is a plaintext channel, https:// TLS (the exporter's own rule).
        return OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    return HTTPSpanExporter(endpoint=endpoint)


def start(settings: TelemetrySettings, instance_id: str) -> Telemetry | None:
    """The process's telemetry, exporting where the settings say; None when it is off
    (and then nothing of OpenTelemetry was imported)."""
    if not settings.enabled:
        return None
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.sdk.metrics import MeterProvider as SDKMeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import NoOpTracerProvider

    # OTEL_RESOURCE_ATTRIBUTES (read by the SDK) adds to these; ours name the process.
    resource = Resource.create(
        {"service.name": settings.service_name, "service.instance.id": instance_id}
    )
    tracer_provider: TracerProvider = NoOpTracerProvider()
    if settings.traces_endpoint is not None:
        # shutdown_on_exit off: `Telemetry.shutdown` is the one (bounded) way it stops; the
        # SDK's own exit hook would block the process's exit on an unreachable collector.
        sdk_tracer = SDKTracerProvider(
            resource=resource,
            sampler=_sampler(settings.sampler, settings.sampler_arg),
            shutdown_on_exit=False,
        )
        exporter = _span_exporter(settings.traces_protocol, settings.traces_endpoint)
        sdk_tracer.add_span_processor(BatchSpanProcessor(exporter))
        tracer_provider = sdk_tracer
    meter_provider: MeterProvider = NoOpMeterProvider()
    if settings.metrics_endpoint is not None:
        if settings.metrics_protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )

            metric_exporter: MetricExporter = OTLPMetricExporter(
                endpoint=settings.metrics_endpoint,
                insecure=settings.metrics_endpoint.startswith("http://"),
            )
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter as HTTPMetricExporter,
            )

            metric_exporter = HTTPMetricExporter(endpoint=settings.metrics_endpoint)
        reader = PeriodicExportingMetricReader(
            metric_exporter,
            export_interval_millis=settings.metric_interval_ms,
        )
        meter_provider = SDKMeterProvider(
            resource=resource, metric_readers=[reader], shutdown_on_exit=False
        )
    return Telemetry(tracer_provider, meter_provider)
