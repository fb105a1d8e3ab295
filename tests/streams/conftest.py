"""Fixtures for tests that run the orchestrator for real (subprocesses, real broker)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from procs import ServiceProcess

from headrace.services.responder import Responder
from headrace.settings import Settings
from headrace.topic_admin import ensure_topics


@pytest.fixture
def platform(settings: Settings) -> Settings:
    """Every topic created under this test's prefix."""
    ensure_topics(settings)
    return settings


@pytest.fixture
def orchestrators(platform: Settings, tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Factory of orchestrator worker processes; all are stopped at the end."""
    made: list[ServiceProcess] = []

    def make(instance: str = "a", env: dict[str, str] | None = None) -> ServiceProcess:
        proc = ServiceProcess(
            f"orchestrator-{instance}",
            ["-m", "headrace", "serve", "orchestrator", "--instance", instance, "--web-port", "0"],
            platform,
            tmp_path / f"orchestrator-{instance}",
            env,
        )
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.stop(30)


@pytest.fixture
def responder(platform: Settings) -> Iterator[Responder]:
    r = Responder(platform).start()
    yield r
    r.stop()
