"""The grpc-core experiments `aibridge config-service` serves with (config_service/grpc_experiments.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from config_service import grpc_experiments


def test_the_operators_own_experiments_come_after_ours_so_theirs_win() -> None:
    """An operator's GRPC_EXPERIMENTS entries follow ours, so `-ph2_server` turns ours off."""
    assert grpc_experiments.with_ours("") == "ph2_server"
    assert grpc_experiments.with_ours("-ph2_server, ") == "ph2_server,-ph2_server"


def test_nothing_is_set_in_a_process_that_already_imported_grpc() -> None:
    """Once grpc is imported its experiments are read: setting them then would only mislead."""
    environ = {"GRPC_EXPERIMENTS": "tcp_rcv_lowat"}
    assert "grpc" in sys.modules
    assert not grpc_experiments.enable(environ)
    assert environ == {"GRPC_EXPERIMENTS": "tcp_rcv_lowat"}


def test_the_config_service_command_sets_them_before_it_imports_grpc() -> None:
    """Importing the command module sets GRPC_EXPERIMENTS, and only then imports grpc."""
    probe = (
        "import os, sys\n"
        "import config_service.commands.serve\n"
        "assert 'grpc' in sys.modules\n"
        "print(os.environ['GRPC_EXPERIMENTS'])\n"
    )
    env = {**os.environ, "GRPC_EXPERIMENTS": "tcp_rcv_lowat"}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "ph2_server,tcp_rcv_lowat"
