"""Fixtures for worker SDK tests: topics, a fake task service, workers in threads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sdk_kit import Dispatcher, Results, WorkerThread

from headrace.sdk import Worker
from headrace.settings import Settings
from headrace.topic_admin import ensure_topics


@pytest.fixture
def platform(settings: Settings) -> Settings:
    ensure_topics(settings)
    return settings


@pytest.fixture
def dispatcher(platform: Settings) -> Dispatcher:
    return Dispatcher(platform)


@pytest.fixture
def results(platform: Settings) -> Iterator[Results]:
    r = Results(platform)
    yield r
    r.close()


@pytest.fixture
def run_worker() -> Iterator[Callable[..., WorkerThread]]:
    """Start workers in threads; any still running are stopped after the test."""
    made: list[WorkerThread] = []

    def start(worker: Worker, **serve_options: Any) -> WorkerThread:
        t = WorkerThread(worker, **serve_options).start()
        made.append(t)
        return t

    yield start
    for t in made:
        if t.alive:
            t.stop()
