"""Fixtures for the timer service's integration tests (real broker, service as a subprocess)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from timers_kit import TimersProcess

from headrace.settings import Settings
from headrace.topic_admin import ensure_topics


@pytest.fixture
def platform(settings: Settings) -> Settings:
    ensure_topics(settings)
    return settings


@pytest.fixture
def timers(platform: Settings, tmp_path: Path) -> Iterator[Callable[..., TimersProcess]]:
    """Factory of timer-service processes; all are stopped at the end."""
    made: list[TimersProcess] = []

    def make(env: dict[str, str] | None = None, instance: str = "0") -> TimersProcess:
        proc = TimersProcess(platform, tmp_path / f"timers-{len(made)}", env, instance)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.stop(30)
