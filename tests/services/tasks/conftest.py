"""Fixtures for the task service's integration tests (real broker, services as subprocesses)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tasks_kit import Stack

from headrace.settings import Settings
from headrace.topic_admin import ensure_topics


@pytest.fixture
def platform(settings: Settings) -> Settings:
    ensure_topics(settings)
    return settings


@pytest.fixture
def stack(platform: Settings, tmp_path: Path) -> Iterator[Stack]:
    """Orchestrator, timer service, task service and raw workers; all stopped at the end."""
    made = Stack(platform, tmp_path, tmp_path / "ledger.jsonl")
    yield made
    made.stop()
