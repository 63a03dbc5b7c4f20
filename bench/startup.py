"""Start-up to ready for each daemon (DESIGN §10: ≤ 1 s per daemon), median of runs.

- config service: from process start to gRPC health SERVING. "cold" uses a fresh data
  directory (SQLite created, migrations, seeding); "warm" restarts on the same one.
- bridge: from process start to GET /readyz 200 (a snapshot was applied), with a config
  service already running.
- proxy: the same for `aibridge proxy` (its CA is generated into the data directory
  by the first run; later runs load it); skipped with a note when `aibridge proxy
  --help` fails.

Readiness is polled every 5 ms, so figures include up to ~5 ms of polling slack.

    python bench/startup.py [--runs 5]
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, table, write_result
from _stack import (
    AIBRIDGE,
    PROXY,
    Proc,
    bridge_env,
    clean_env,
    config_service_env,
    free_port,
    start,
    start_config_service,
    wait_ready,
)

BAR_S = 1.0


def _wait_port(port: int, deadline: float, alive: Callable[[], bool]) -> None:
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if not alive():
            raise RuntimeError("process exited before listening")
        time.sleep(0.005)
    raise RuntimeError(f"port {port} not listening")


def _wait_serving(port: int, daemon: Proc, timeout: float = 60) -> float:
    """Poll gRPC health until SERVING; returns time.monotonic() then."""
    deadline = time.monotonic() + timeout
    _wait_port(port, deadline, lambda: daemon.popen.poll() is None)
    options = [("grpc.initial_reconnect_backoff_ms", 5), ("grpc.min_reconnect_backoff_ms", 5)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic()
            except grpc.RpcError:
                pass
            time.sleep(0.005)
    raise RuntimeError(f"config service not SERVING; log:\n{daemon.tail()}")


def config_service_run(data_dir: Path, log_dir: Path) -> float:
    port = free_port()
    daemon = start(
        "config-service", ["config-service"], config_service_env(data_dir, port, 9), log_dir
    )
    try:
        return _wait_serving(port, daemon) - daemon.started
    finally:
        daemon.stop()


def http_daemon_run(
    name: str, args: list[str], env: dict[str, str], port: int, log_dir: Path
) -> float:
    daemon = start(name, args, env, log_dir)
    try:
        try:
            return wait_ready(port, timeout=60) - daemon.started
        except RuntimeError as exc:
            raise RuntimeError(f"{name}: {exc}; log:\n{daemon.tail()}") from None
    finally:
        daemon.stop()


def proxy_available() -> tuple[bool, str]:
    try:
        done = subprocess.run(
            [AIBRIDGE, "proxy", "--help"], env=clean_env({}), capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"`aibridge proxy --help` failed: {exc}"
    if done.returncode != 0:
        return False, f"`aibridge proxy --help` exited {done.returncode}"
    return True, ""


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "median_s": round(statistics.median(values), 3),
        "min_s": round(min(values), 3),
        "max_s": round(max(values), 3),
        "runs_s": [round(v, 3) for v in values],
    }


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    results: dict[str, Any] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="aibridge-startup-") as tmp_name:
        tmp = Path(tmp_name)
        cold, warm = [], []
        for i in range(args.runs):
            data = tmp / f"cs{i}"
            cold.append(config_service_run(data, tmp))
            warm.append(config_service_run(data, tmp))
        results["config_service_cold"] = summary(cold)
        results["config_service_warm"] = summary(warm)

        service, target = start_config_service(tmp / "shared", 9, tmp)
        try:
            bridge = []
            for _ in range(args.runs):
                port = free_port()
                bridge.append(
                    http_daemon_run(
                        "bridge", ["bridge"], bridge_env(target, port, tmp / "bridge"), port, tmp
                    )
                )
            results["bridge"] = summary(bridge)
            ok, why = proxy_available()
            if ok:
                proxy = []
                for _ in range(args.runs):
                    port = free_port()
                    env = {
                        "AIBRIDGE_CONFIG_SERVICE": target,
                        "AIBRIDGE_PROXY_TOKEN": PROXY,
                        "AIBRIDGE_PROXY_LISTEN": f"127.0.0.1:{port}",
                        "AIBRIDGE_DATA_DIR": str(tmp / "proxy-data"),
                        "AIBRIDGE_LOG_FORMAT": "json",
                    }
                    proxy.append(http_daemon_run("proxy", ["proxy"], env, port, tmp))
                results["proxy"] = summary(proxy)
            else:
                notes.append(f"proxy skipped: {why}")
        finally:
            service.stop()
    rows = []
    labels = {
        "config_service_cold": "config service, fresh data dir (health SERVING)",
        "config_service_warm": "config service, restart (health SERVING)",
        "bridge": "bridge (/readyz 200, snapshot applied)",
        "proxy": "proxy (/readyz 200, snapshot applied)",
    }
    for key, label in labels.items():
        if key in results:
            r = results[key]
            met = "yes" if r["median_s"] <= BAR_S else "NO"
            rows.append([label, r["median_s"], r["min_s"], r["max_s"], f"<= {BAR_S:g}", met])
        else:
            rows.append([label, "skipped", "", "", f"<= {BAR_S:g}", ""])
    print(table(["daemon", "median s", "min s", "max s", "DESIGN §10 bar", "met"], rows))
    for note in notes:
        print(note)
    path = write_result(
        "startup", {"runs": args.runs, "bar_s": BAR_S, "results": results, "notes": notes}
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
