"""Approval and SLA tests on the real broker: fixtures from tests/control_kit.py plus the
timer service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from control_kit import Service, api, orchestrator, platform  # noqa: F401

from headrace.settings import Settings


@pytest.fixture
def timers(platform: Settings, tmp_path: Path) -> Iterator[Service]:  # noqa: F811
    """The timer service (not started), with /metrics on a port of its own."""
    proc = Service(
        "timers",
        ["-m", "headrace", "serve", "timers", "--instance", "0", "--web-port", "{port}"],
        platform,
        tmp_path / "timers",
    )
    yield proc
    proc.stop(30)
