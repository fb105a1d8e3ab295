"""Fixtures shared by every test: a real Kafka broker, a topic prefix per test, settings.

``kafka_bootstrap`` uses ``HEADRACE_BOOTSTRAP`` when it is set (CI and
developers with a broker already running); otherwise it starts one local
broker for the whole session through :mod:`headrace.dev`, on a free port and
with its own data folder (never the developer's ``headrace dev`` broker), and
stops it at the end. The broker's jars come from the usual cache
(``HEADRACE_HOME``, default ``~/.cache/headrace``), downloaded once.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from headrace.dev import ClusterSpec, KafkaCluster, free_port_block
from headrace.errors import ErrorCode, HeadraceError
from headrace.settings import Settings


def _start_cluster(root: Path, brokers: int) -> KafkaCluster:
    cache_home = Settings().home
    for _ in range(3):
        spec = ClusterSpec(brokers=brokers, port=free_port_block(2 * brokers))
        cluster = KafkaCluster(root, spec, cache_home, die_with_parent=True)
        try:
            cluster.up()
            return cluster
        except HeadraceError as exc:
            # Another process may take the free ports between our check and the bind.
            if exc.code is not ErrorCode.PORT_IN_USE:
                raise
    raise RuntimeError("could not find free ports for a test Kafka cluster")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real Kafka: ``HEADRACE_BOOTSTRAP``, or a broker started here."""
    given = os.environ.get("HEADRACE_BOOTSTRAP")
    if given:
        yield given
        return
    cluster = _start_cluster(tmp_path_factory.mktemp("kafka"), brokers=1)
    try:
        yield cluster.bootstrap
    finally:
        cluster.down()


@pytest.fixture
def kafka_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[int], KafkaCluster]]:
    """Factory for a private local cluster (``kafka_cluster(3)``) that a test may stop,
    kill and restart node by node; every cluster it made is stopped after the test."""
    made: list[KafkaCluster] = []

    def make(brokers: int = 3) -> KafkaCluster:
        cluster = _start_cluster(tmp_path_factory.mktemp(f"kafka{brokers}x"), brokers)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.down()


@pytest.fixture
def topic_prefix() -> str:
    """A prefix no other test uses, so tests share one broker without seeing each other."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> Settings:
    """Settings bound to the test broker and this test's topic prefix."""
    return Settings(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
