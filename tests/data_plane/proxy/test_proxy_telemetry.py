"""The proxy's spans: one per CONNECT session, tunnel or MITM, ended when the session
closes; exported through the SDK's in-memory exporter (the export seam)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dp_fakes import BRIDGE_TOKEN, MEMBER_TOKEN, ConfigServer, snapshot
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from proxy_fakes import Echo, raw_connect, wait_for_proxy_version

from aibridge.telemetry import Telemetry
from data_plane.proxy.server import Proxy
from data_plane.proxy.settings import ProxySettings
from tests.fixtures.waits import eventually


@pytest.fixture
async def traced_proxy(
    config_service: ConfigServer, echo: Echo, tmp_path: Path
) -> AsyncIterator[tuple[Proxy, InMemorySpanExporter]]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    await config_service.service.publish(snapshot("1", []))
    settings = ProxySettings.from_env(
        {
            "AIBRIDGE_PROXY_TOKEN": BRIDGE_TOKEN,
            "AIBRIDGE_PROXY_LISTEN": "127.0.0.1:0",
            "AIBRIDGE_CONFIG_SERVICE": config_service.target,
            "AIBRIDGE_DATA_DIR": str(tmp_path / "proxy-data"),
            "AIBRIDGE_PROXY_ALLOWED_PORTS": str(echo.port),
            "AIBRIDGE_PROXY_ALLOWED_PRIVATE_CIDRS": "127.0.0.0/8",
        }
    )
    proxy = Proxy(settings, telemetry=Telemetry(provider, MeterProvider()))
    await proxy.start()
    try:
        await wait_for_proxy_version(proxy, "1")
        yield proxy, spans
    finally:
        await proxy.stop()


async def test_a_tunnel_is_one_connect_span_ended_with_the_session(
    traced_proxy: tuple[Proxy, InMemorySpanExporter], echo: Echo
) -> None:
    """A tunnelled CONNECT is a SERVER span naming the destination and the principal, ended once the tunnel closes; a refused CONNECT has none."""
    proxy, spans = traced_proxy
    status, _, reader, writer = await raw_connect(
        proxy, f"127.0.0.1:{echo.port}", f"u:{MEMBER_TOKEN}"
    )
    assert status == 200
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    assert spans.get_finished_spans() == ()
    writer.close()
    await eventually(lambda: len(spans.get_finished_spans()) == 1)
    (span,) = spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert span.name == "CONNECT" and span.kind is SpanKind.SERVER
    assert attributes["aibridge.proxy.mode"] == "tunnel"
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == echo.port
    assert attributes["aibridge.principal.id"] == "p-0"
    assert MEMBER_TOKEN not in repr(attributes)
    status, _, _, writer = await raw_connect(proxy, "127.0.0.1:22", f"u:{MEMBER_TOKEN}")
    assert status == 403
    writer.close()
    assert len(spans.get_finished_spans()) == 1
