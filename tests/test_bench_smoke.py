"""The benchmarks still run: each script with a tiny N, as a subprocess, writing its JSON
into a temp dir (AIBRIDGE_BENCH_RESULTS) instead of bench/results/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from aibridge.config.v1 import config_service_pb2 as cs

# bench/_c_subscribers: builds and drives bench/_subscribers.c.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import _c_subscribers

BENCH = Path(__file__).resolve().parent.parent / "bench"

C_SUBSCRIBERS_MISSING = _c_subscribers.missing()
TOOL_PATH = f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/bin"


def run(script: str, args: list[str], results: Path, timeout: float = 100) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIBRIDGE_", "CODER_"))}
    env["AIBRIDGE_BENCH_RESULTS"] = str(results)
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    written = sorted(results.glob("*.json"))
    assert written, f"{script} wrote no result file:\n{done.stdout}"
    doc = json.loads(written[0].read_text())
    assert isinstance(doc, dict)
    assert "machine" in doc
    return doc


def saturation_and_latency(doc: dict[str, object]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The "saturation" and "latency" sections of a bridge benchmark's result, both objects."""
    saturation, latency = doc["saturation"], doc["latency"]
    assert isinstance(saturation, dict)
    assert isinstance(latency, dict)
    return saturation, latency


@pytest.mark.timeout(150)
def test_propagation(tmp_path: Path) -> None:
    doc = run("propagation.py", ["--subscribers", "2", "--writes", "2"], tmp_path)
    assert doc["refused"] == 0
    assert doc["missing_deliveries"] == 0


@pytest.mark.timeout(150)
@pytest.mark.skipif(C_SUBSCRIBERS_MISSING is not None, reason=str(C_SUBSCRIBERS_MISSING))
def test_propagation_with_c_subscribers(tmp_path: Path) -> None:
    """With --c-subscribers every C stream sees every change and the subscribers' CPU is reported."""
    doc = run(
        "propagation.py", ["--subscribers", "4", "--writes", "2", "--c-subscribers"], tmp_path
    )
    assert doc["subscriber_kind"] == "c"
    assert doc["connected"] == 4
    assert doc["refused"] == doc["missing_deliveries"] == 0
    assert doc["versions_seen"]["distinct_sequences"] == 1
    assert len(doc["versions_seen"]["common_sequence"]) == 3  # the first snapshot and 2 writes
    c = doc["c_subscribers"]
    assert c["bad_messages"] == c["ended_after_first_snapshot"] == c["connections_lost"] == 0
    assert "subscriber_cpu_seconds_during_writes" in doc


TOKEN = "aib_test_c_subscribers_token"


def response(version: str) -> bytes:
    return cs.WatchProvidersResponse(
        snapshot=cs.ProviderSnapshot(version=version)
    ).SerializeToString()


@pytest.fixture
def scripted_server() -> Iterator[str]:
    """A WatchProviders server on port 0 scripted per stream (the node id's last number):
    0 sends version 5 and stays open, 1 is refused before any message, 2 sends version 5
    and ends, 3 sends bytes that are no response and ends; stream 0 answers only once the
    others are over, so all of it is on the wire before the client says it is ready."""
    done = [threading.Event() for _ in range(4)]

    def watch(request: cs.WatchProvidersRequest, context: grpc.ServicerContext) -> Iterator[bytes]:
        stream = int(request.node_id.rsplit("-", 1)[1])
        context.add_callback(done[stream].set)
        if dict(context.invocation_metadata()).get("authorization") != f"Bearer {TOKEN}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")
        if stream == 1:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "refused")
        if stream == 0:
            for other in done[1:]:
                other.wait(30)
            yield response("5")
            done[0].wait(30)  # until the client goes
            return
        yield response("5") if stream == 2 else b"\x0a\x03\x0a\x01"  # truncated snapshot

    handler = grpc.method_handlers_generic_handler(
        "aibridge.config.v1.ConfigService",
        {
            "WatchProviders": grpc.unary_stream_rpc_method_handler(
                watch, request_deserializer=cs.WatchProvidersRequest.FromString
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


@pytest.mark.timeout(60)
@pytest.mark.skipif(C_SUBSCRIBERS_MISSING is not None, reason=str(C_SUBSCRIBERS_MISSING))
def test_c_subscribers_count_refused_ended_and_malformed_streams(
    scripted_server: str, tmp_path: Path
) -> None:
    """The C subscribers count a stream refused before its first snapshot, one ended after it
    and a malformed message, and record each snapshot's version as it arrived."""
    exe = _c_subscribers.compile_program(tmp_path)
    (proc,) = _c_subscribers.start(exe, scripted_server, TOKEN, [4], connections=1)
    try:
        assert proc.ready() == (2, 2)
        outcome = proc.stop()
    finally:
        proc.close()
    assert [[v for v, _ in stream] for stream in outcome.arrivals] == [[5], [], [5], []]
    ended = {e.stream: (e.before_first, e.grpc_status) for e in outcome.ended}
    assert ended == {
        1: (True, grpc.StatusCode.PERMISSION_DENIED.value[0]),
        2: (False, 0),
        3: (True, 0),
    }
    assert outcome.bad_messages == 1
    assert outcome.messages == 3


@pytest.mark.timeout(150)
def test_grpc_floor(tmp_path: Path) -> None:
    """The bare grpc.aio fan-out floor opens its streams and delivers every change."""
    doc = run("grpc_floor.py", ["--subscribers", "2", "--changes", "2"], tmp_path)
    assert doc["opened"] == 2
    assert doc["missing_deliveries"] == 0


@pytest.mark.timeout(150)
def test_bridge_overhead(tmp_path: Path) -> None:
    doc = run("bridge_overhead.py", ["--requests", "200"], tmp_path)
    saturation, latency = saturation_and_latency(doc)
    assert saturation["json"]["errors"] == 0
    assert {"added_p50_ms", "added_p99_ms", "added_ttfb_p50_ms"} <= set(latency["sse"])


@pytest.mark.timeout(150)
def test_bridge_overhead_with_recording(tmp_path: Path) -> None:
    """With --record a recording bridge runs beside the plain one and builds its records."""
    doc = run("bridge_overhead.py", ["--requests", "200", "--record"], tmp_path)
    recording = doc["recording"]
    assert isinstance(recording, dict)
    assert isinstance(recording["records"], int) and recording["records"] > 0
    assert recording["json"]["saturation"]["errors"] == 0
    assert "added_p50_ms" in recording["json"]


@pytest.mark.timeout(180)
def test_bridge_overhead_with_a_baseline(tmp_path: Path) -> None:
    """With --record --baseline REV a third bridge from REV's tree records too, and its loss
    and the recording bridge's ratio to it are reported."""
    doc = run(
        "bridge_overhead.py", ["--requests", "200", "--record", "--baseline", "HEAD"], tmp_path
    )
    baseline = doc["baseline"]
    assert isinstance(baseline, dict) and baseline["rev"] == "HEAD"
    assert baseline["json"]["saturation"]["errors"] == 0
    assert "after_over_before_per_cpu" in baseline["json"]


@pytest.mark.timeout(150)
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="--pin needs 2 CPUs")
def test_bridge_overhead_pinned(tmp_path: Path) -> None:
    """With --pin the bridges run on the last CPU only and still serve without errors."""
    doc = run("bridge_overhead.py", ["--requests", "200", "--pin"], tmp_path)
    saturation, _ = saturation_and_latency(doc)
    assert saturation["json"]["errors"] == 0
    assert doc["bridge_cpus"] == [max(os.sched_getaffinity(0))]


@pytest.mark.timeout(150)
def test_recording_cost(tmp_path: Path) -> None:
    """The in-process recording cost benchmark builds one record per request with recording on."""
    doc = run("recording_cost.py", ["--requests", "20", "--blocks", "1"], tmp_path)
    assert doc["records"] == 20
    assert "diff_us" in doc


@pytest.mark.timeout(240)
@pytest.mark.skipif(
    shutil.which("valgrind") is None or shutil.which("cc") is None,
    reason="needs valgrind (callgrind.h) and a C compiler",
)
def test_recording_parts(tmp_path: Path) -> None:
    """The part-by-part count of recording's instructions runs under callgrind and counts every phase."""
    doc = run("recording_parts.py", ["--requests", "20"], tmp_path, timeout=220)
    per = doc["per_request"]
    assert isinstance(per, dict)
    assert {"off", "on", "take", "values", "batch", "encode"} <= set(per)
    assert all(isinstance(v, float) and v > 0 for v in per.values())


@pytest.mark.timeout(240)
@pytest.mark.skipif(
    shutil.which("valgrind") is None or shutil.which("cc") is None,
    reason="needs valgrind (callgrind.h) and a C compiler",
)
def test_fanout_instructions(tmp_path: Path) -> None:
    """The config service's instructions per stream per change are counted under callgrind, every stream getting every change."""
    args = ["--subscribers", "20", "--changes", "2", "--idle", "0.5", "--settle", "0.5"]
    doc = run("fanout_instructions.py", args, tmp_path, timeout=220)
    assert doc["subscribers"] == 20
    assert doc["messages"] == 20 * 3  # the first snapshot and one per change
    counted = doc["instructions"]
    assert isinstance(counted, dict)
    assert {"alone1", "fanout", "alone2", "idle0", "idle1"} <= set(counted)
    per = doc["instructions_per_stream_per_change"]
    assert isinstance(per, int) and per > 0


@pytest.mark.timeout(150)
def test_startup(tmp_path: Path) -> None:
    doc = run("startup.py", ["--runs", "1"], tmp_path)
    results = doc["results"]
    assert isinstance(results, dict)
    assert {"config_service_cold", "config_service_warm", "bridge"} <= set(results)
    assert not (tmp_path / "bench").exists()


@pytest.mark.timeout(150)
def test_usage_ingest(tmp_path: Path) -> None:
    doc = run("usage_ingest.py", ["--records", "2000", "--batch", "500"], tmp_path)
    assert doc["inserted"] == 2000
    assert doc["replay_inserted"] == 0
    assert doc["replay_duplicates"] == 2000
    assert {"ship_records_per_s", "spool_records_per_s", "spool_replay_records_per_s"} <= set(doc)


@pytest.mark.timeout(150)
def test_otel(tmp_path: Path) -> None:
    doc = run("otel.py", ["--requests", "200"], tmp_path)
    saturation, latency = saturation_and_latency(doc)
    assert saturation["off"]["errors"] == saturation["on"]["errors"] == 0
    assert {"off_added_p50_ms", "on_added_p50_ms"} <= set(latency["json"])
    receiver = doc["receiver"]
    assert isinstance(receiver, dict)
    assert receiver["spans"] > 0


@pytest.mark.timeout(150)
def test_proxy_path(tmp_path: Path) -> None:
    """bench/proxy_path.py measures the proxy, the bridge alone and direct, without errors."""
    doc = run("proxy_path.py", ["--requests", "200", "--rounds", "5"], tmp_path)
    saturation, latency = saturation_and_latency(doc)
    assert saturation["proxy"]["json"]["errors"] == 0
    assert {"added_p50_ms", "hop_p50_ms", "added_ttfb_p50_ms"} <= set(latency["sse"]["proxy"])


@pytest.mark.timeout(150)
def test_workers(tmp_path: Path) -> None:
    """bench/workers.py saturates a one-worker and a two-worker bridge, without errors."""
    doc = run("workers.py", ["--requests", "300", "--rounds", "1"], tmp_path)
    figures = doc["figures"]
    assert isinstance(figures, dict)
    assert figures["1"]["errors"] == figures["2"]["errors"] == 0
    assert len(figures["2"]["per_worker_cpu_seconds"]) == 2


@pytest.mark.timeout(150)
def test_workers_with_c_load(tmp_path: Path) -> None:
    """bench/workers.py --load c drives both bridges with wrk against an nginx upstream."""
    missing = [tool for tool in ("nginx", "wrk") if shutil.which(tool, path=TOOL_PATH) is None]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} not installed (Debian packages; .ci/run installs them)"
        )
    doc = run("workers.py", ["--load", "c", "--seconds", "1", "--rounds", "1"], tmp_path)
    figures = doc["figures"]
    assert isinstance(figures, dict)
    assert figures["1"]["errors"] == figures["2"]["errors"] == 0
    assert figures["2"]["requests"] > 0


@pytest.mark.timeout(150)
@pytest.mark.skipif(
    shutil.which("nginx", path=TOOL_PATH) is None,
    reason="nginx is not installed (a Debian package; .ci/run installs it)",
)
def test_nginx_floor(tmp_path: Path) -> None:
    """bench/nginx_floor.py measures direct, the bridge and nginx without errors, and leaves
    no nginx process running."""
    doc = run("nginx_floor.py", ["--requests", "200", "--streams", "20", "--rounds", "5"], tmp_path)
    figures = doc["figures"]
    assert isinstance(figures, dict)
    assert set(figures) == {"bridge", "nginx"}
    assert figures["bridge"]["sse"]["errors"] == figures["nginx"]["json"]["errors"] == 0
    assert "per_cpu_second" in doc["bridge_over_nginx"]["json"]  # type: ignore[index]
    pids = doc["nginx_pids"]
    assert isinstance(pids, list) and len(pids) == 2  # the master and its one worker
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
