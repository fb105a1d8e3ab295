"""Fixtures for the signal service's integration tests: the platform as real subprocesses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from procs import ServiceProcess
from signals_kit import SignalsProcess, deploy_all

from headrace.services.responder import Responder
from headrace.settings import Settings
from headrace.topic_admin import ensure_topics


@pytest.fixture
def platform(settings: Settings) -> Settings:
    """Every topic under this test's prefix, the test workflows deployed."""
    ensure_topics(settings)
    deploy_all(settings)
    return settings


@pytest.fixture
def services(platform: Settings, tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """``services("orchestrator" | "timers" | "signals", env=...)``: started processes of this
    test, all stopped at the end."""
    made: list[ServiceProcess] = []

    def make(name: str, env: dict[str, str] | None = None) -> ServiceProcess:
        proc: ServiceProcess
        if name == "signals":
            proc = SignalsProcess(platform, tmp_path / "signals", env)
        else:
            argv = ["-m", "headrace", "serve", name, "--web-port", "0"]
            proc = ServiceProcess(name, argv, platform, tmp_path / name, env)
        made.append(proc)
        return proc.start()

    yield make
    for proc in made:
        proc.stop(30)


@pytest.fixture
def responder(platform: Settings) -> Iterator[Responder]:
    """Answers every task at once (the task service's stand-in)."""
    r = Responder(platform).start()
    yield r
    r.stop()
