"""The gRPC contract: generated stubs are fresh, buf lint passes, reflection and health are served."""

from __future__ import annotations

import asyncio
import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.fixtures.services import Service

ROOT = Path(__file__).resolve().parent.parent
BUF_VERSION = "1.75.0"


def stubs(root: Path) -> list[Path]:
    return sorted(
        p.relative_to(root)
        for p in (root / "aibridge").rglob("*_pb2*")
        if p.suffix in (".py", ".pyi")
    )


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    """Regenerating the stubs from protos/ reproduces the committed files byte for byte."""
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    generated = stubs(tmp_path)
    committed = stubs(ROOT)
    assert generated == committed, "run: python scripts/gen_protos.py"
    stale = [str(p) for p in generated if not filecmp.cmp(tmp_path / p, ROOT / p, shallow=False)]
    assert not stale, f"stale generated files (run python scripts/gen_protos.py): {stale}"


def test_buf_lint_passes() -> None:
    """buf lint (STANDARD rules) reports nothing on protos/."""
    result = subprocess.run(
        [_npx(), "-y", f"@bufbuild/buf@{BUF_VERSION}", "lint"],
        cwd=ROOT / "protos",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def list_services(channel: grpc.aio.Channel, method: str) -> set[str]:
    call = channel.stream_stream(
        method,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names: set[str] = set()
    async for response in call:
        names |= {s.name for s in response.list_services_response.service}
    return names


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_lists_the_services(service: Service, version: str) -> None:
    """Server reflection (v1 and v1alpha) lists every aibridge.config.v1 service, without a token."""
    names = await list_services(
        service.channel(), f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
    )
    ours = ["ConfigService", "ProviderAdminService", "TokenAdminService", "UsageService"]
    assert {f"aibridge.config.v1.{name}" for name in ours} | {"grpc.health.v1.Health"} <= names


async def test_reflection_describes_the_snapshot_message(service: Service) -> None:
    """Reflection serves the file descriptors so grpcurl can decode a snapshot."""
    stub = reflection_pb2_grpc.ServerReflectionStub(service.channel())
    call = stub.ServerReflectionInfo(
        iter(
            [
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="aibridge.config.v1.ConfigService"
                )
            ]
        )
    )
    async for response in call:
        assert response.file_descriptor_response.file_descriptor_proto
        break


def _npx() -> str:
    npx = shutil.which("npx")
    if npx is None:
        pytest.fail("npx (Node.js) is required for the buf gates")
    return npx


async def test_buf_curl_lists_every_method(service: Service) -> None:
    """`buf curl --list-methods` (reflection v1, as buf asks first) describes every service."""
    process = await asyncio.create_subprocess_exec(
        _npx(),
        "-y",
        f"@bufbuild/buf@{BUF_VERSION}",
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "--list-methods",
        f"http://{service.target}",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=300)
    assert process.returncode == 0, err.decode()
    methods = set(out.decode().split())
    assert {
        "aibridge.config.v1.ConfigService/WatchProviders",
        "aibridge.config.v1.TokenAdminService/CreateToken",
        "grpc.health.v1.Health/Check",
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    } <= methods


async def test_health_reports_serving(service: Service) -> None:
    """grpc.health.v1 reports SERVING for the server and the config service."""
    stub = health_pb2_grpc.HealthStub(service.channel())
    for name in ("", "aibridge.config.v1.ConfigService"):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_graceful_stop_flips_health_first(service: Service) -> None:
    """Stopping the service reports NOT_SERVING to health watchers before the port closes."""
    stub = health_pb2_grpc.HealthStub(service.channel())
    call = stub.Watch(health_pb2.HealthCheckRequest(service=""))
    first = await call.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING  # type: ignore[union-attr]
    stopping = service.running.stop(grace=1)
    task = asyncio.ensure_future(stopping)
    second = await call.read()
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING  # type: ignore[union-attr]
    await task
