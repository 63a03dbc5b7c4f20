"""Bedrock test fixtures: the fake Bedrock Runtime every Bedrock test talks to."""

from __future__ import annotations

import pytest
from bedrock_testkit import FakeBedrock


@pytest.fixture
def fake() -> FakeBedrock:
    return FakeBedrock()
