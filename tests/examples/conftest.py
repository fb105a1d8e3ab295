"""Fixtures for the example tests: one platform per module, on its own topic prefix."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from examples_kit import Platform

from headrace.settings import Settings
from headrace.topic_admin import ensure_topics


@pytest.fixture(scope="module")
def platform_settings(kafka_bootstrap: str) -> Iterator[Settings]:
    """Settings on the test broker with a prefix of this module's own; topics deleted after."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=prefix)
    ensure_topics(settings)
    yield settings
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    with contextlib.suppress(KafkaException):
        names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        for fut in admin.delete_topics(names, operation_timeout=30).values() if names else ():
            with contextlib.suppress(KafkaException):
                fut.result(30)


@pytest.fixture(scope="module")
def platform(
    platform_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """Orchestrator, timers, tasks, the HTTP connector, the shop and the orders worker."""
    made = Platform(platform_settings, Path(tmp_path_factory.mktemp("platform"))).start()
    try:
        made.wait_ready()
        yield made
    finally:
        made.stop()
