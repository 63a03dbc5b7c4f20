"""The grpc-core experiments a command serves with, and the operator's say over them."""

from __future__ import annotations

import os

import pytest

from aibridge.cli import main


def test_the_config_service_serves_with_fused_filters_unless_the_operator_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`aibridge config-service` sets GRPC_EXPERIMENTS=fuse_filters before grpc loads, and an operator's own entries come after it, so theirs win."""
    for theirs, expected in (
        (None, "fuse_filters"),
        ("-fuse_filters", "fuse_filters,-fuse_filters"),
        ("ph2_server", "fuse_filters,ph2_server"),
    ):
        if theirs is None:
            monkeypatch.delenv("GRPC_EXPERIMENTS", raising=False)
        else:
            monkeypatch.setenv("GRPC_EXPERIMENTS", theirs)
        with pytest.raises(SystemExit) as done:
            main(["config-service", "--help"])
        assert done.value.code == 0
        assert os.environ["GRPC_EXPERIMENTS"] == expected


def test_a_client_command_keeps_the_environment_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Commands that only call the service (here `aibridge snapshot`) set no experiment."""
    monkeypatch.delenv("GRPC_EXPERIMENTS", raising=False)
    with pytest.raises(SystemExit):
        main(["snapshot", "--help"])
    assert "GRPC_EXPERIMENTS" not in os.environ
