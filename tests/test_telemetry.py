"""OpenTelemetry is switched by the standard OTEL_* variables, read through the settings
schema: where each signal is exported, how traces are sampled, every bad value named;
and when it is off nothing of OpenTelemetry is even imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from aibridge.envconfig import OTEL
from aibridge.telemetry import TelemetrySettings, clean, start
from data_plane.bridge.settings import BridgeSettings
from tests.fixtures.settings import refusal

BRIDGE = {
    "AIBRIDGE_BRIDGE_TOKEN": "test-bridge-token-0123456789abcdef",
    "AIBRIDGE_BRIDGE_LISTEN": "127.0.0.1:0",
}


def _settings(**env: str) -> TelemetrySettings:
    values = OTEL.load(env)
    values.check()
    return TelemetrySettings.of(values, "aibridge-test")


def test_off_without_an_endpoint() -> None:
    """With no OTLP endpoint set, telemetry is off and `start` gives None."""
    settings = _settings(OTEL_SERVICE_NAME="mine", OTEL_TRACES_SAMPLER="always_on")
    assert not settings.enabled
    assert start(settings, "node") is None


def test_http_endpoint_gets_each_signals_path_and_grpc_takes_it_as_is() -> None:
    """Over HTTP the base endpoint gets /v1/traces and /v1/metrics; over gRPC it is used as given."""
    http = _settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318/")
    assert http.traces_endpoint == "http://collector:4318/v1/traces"
    assert http.metrics_endpoint == "http://collector:4318/v1/metrics"
    assert http.traces_protocol == "http/protobuf"
    grpc = _settings(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4317", OTEL_EXPORTER_OTLP_PROTOCOL="grpc"
    )
    assert grpc.traces_endpoint == grpc.metrics_endpoint == "http://collector:4317"


def test_signal_endpoints_protocols_and_exporters_apply_per_signal() -> None:
    """A signal's own endpoint and protocol win over the shared ones; an exporter of none turns that signal off."""
    settings = _settings(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="https://traces.example/v1/traces",
        OTEL_EXPORTER_OTLP_METRICS_PROTOCOL="grpc",
        OTEL_METRICS_EXPORTER="none",
    )
    assert settings.traces_endpoint == "https://traces.example/v1/traces"
    assert settings.metrics_endpoint is None
    only_metrics = _settings(
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT="http://m:4317", OTEL_TRACES_EXPORTER="none"
    )
    assert (only_metrics.traces_endpoint, only_metrics.metrics_endpoint) == (None, "http://m:4317")


def test_sdk_disabled_wins_over_an_endpoint() -> None:
    """OTEL_SDK_DISABLED=true keeps telemetry off whatever endpoint is set."""
    settings = _settings(OTEL_SDK_DISABLED="true", OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318")
    assert not settings.enabled


def test_service_name_defaults_to_the_process() -> None:
    """service.name is the process's own unless OTEL_SERVICE_NAME names it."""
    assert _settings().service_name == "aibridge-test"
    assert _settings(OTEL_SERVICE_NAME="gateway-eu").service_name == "gateway-eu"
    assert BridgeSettings.from_env(BRIDGE).telemetry.service_name == "aibridge-bridge"


def test_every_bad_otel_value_is_reported_at_once() -> None:
    """A bad endpoint, protocol, sampler, ratio and interval are each named, in one error."""
    bad = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        "OTEL_TRACES_SAMPLER": "sometimes",
        "OTEL_TRACES_SAMPLER_ARG": "1.5",
        "OTEL_METRIC_EXPORT_INTERVAL": "soon",
    }
    refusal(
        BridgeSettings.from_env,
        {**BRIDGE, **bad},
        "OTEL_EXPORTER_OTLP_ENDPOINT='collector:4317': expected an http(s) URL",
        "OTEL_EXPORTER_OTLP_PROTOCOL='http/json': expected grpc or http/protobuf",
        "OTEL_TRACES_SAMPLER='sometimes'",
        "OTEL_TRACES_SAMPLER_ARG='1.5': expected a number from 0 to 1",
        "OTEL_METRIC_EXPORT_INTERVAL='soon'",
    )


@pytest.mark.parametrize(
    ("sampler", "arg", "recorded"),
    [
        ("always_off", "1", False),
        ("parentbased_always_off", "1", False),
        ("traceidratio", "0", False),
        ("parentbased_traceidratio", "1", True),
        ("always_on", "1", True),
    ],
)
def test_the_named_sampler_decides_which_root_spans_are_recorded(
    sampler: str, arg: str, recorded: bool
) -> None:
    """OTEL_TRACES_SAMPLER (and its ratio) is the sampler of the tracer provider `start` builds."""
    settings = _settings(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        OTEL_METRICS_EXPORTER="none",
        OTEL_TRACES_SAMPLER=sampler,
        OTEL_TRACES_SAMPLER_ARG=arg,
    )
    telemetry = start(settings, "node")
    assert telemetry is not None
    try:
        span = telemetry.tracer("test").start_span("root")
        assert span.is_recording() is recorded
        span.end()
    finally:
        telemetry.shutdown(timeout_ms=100)


def test_clean_bounds_length_and_replaces_lone_surrogates() -> None:
    """A client-given string is cut to the limit and made valid UTF-8."""
    assert clean("x" * 1000) == "x" * 256
    assert clean("a\ud800b").encode("utf-8") == b"a?b"
    assert clean("nul\x00ok") == "nul\x00ok"


def test_no_opentelemetry_import_when_it_is_off() -> None:
    """Importing and configuring the bridge, the proxy and the config service with no OTEL_* set loads no opentelemetry module."""
    code = textwrap.dedent(
        """
        import os, sys
        for name in list(os.environ):
            if name.startswith("OTEL_"):
                del os.environ[name]
        import config_service.server, data_plane.bridge.server, data_plane.proxy.server
        from aibridge.telemetry import start
        from data_plane.bridge.server import Bridge
        from data_plane.bridge.settings import BridgeSettings
        settings = BridgeSettings.from_env(
            {"AIBRIDGE_BRIDGE_TOKEN": "t" * 40, "AIBRIDGE_BRIDGE_LISTEN": "127.0.0.1:0"}
        )
        assert start(settings.telemetry, "n") is None
        bridge = Bridge(settings)
        assert bridge.telemetry is None and bridge.app.telemetry is None
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
        print(loaded)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stdout


def test_shutdown_with_the_collector_away_gives_up_at_its_timeout() -> None:
    """A span still buffered for an unreachable collector holds shutdown no longer than asked."""
    settings = _settings(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_METRICS_EXPORTER="none"
    )
    telemetry = start(settings, "node")
    assert telemetry is not None
    telemetry.tracer("test").start_span("buffered").end()
    # The SDK alone would wait out its 10 s export timeout and retries.
    assert telemetry.shutdown(timeout_ms=300) is False
