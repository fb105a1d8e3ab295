"""Fixtures shared by every test: a real Kafka broker, a topic prefix per test, settings.

``kafka_bootstrap`` uses ``HEADRACE_BOOTSTRAP`` when it is set (CI and
developers with a broker already running); otherwise it starts one local
broker for the whole session through :mod:`headrace.dev`, on a free port and
with its own data folder (never the developer's ``headrace dev`` broker), and
stops it at the end. The broker's jars come from the usual cache
(``HEADRACE_HOME``, default ``~/.cache/headrace``), downloaded once.
"""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

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
def settings(kafka_bootstrap: str, topic_prefix: str) -> Iterator[Settings]:
    """Settings bound to the test broker and this test's topic prefix.

    The test's topics are deleted afterwards: a broker holds file descriptors for
    every partition, and a whole suite's worth would exhaust its limit."""
    yield Settings(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    delete_topics_with_prefix(kafka_bootstrap, topic_prefix)


def delete_topics_with_prefix(bootstrap: str, prefix: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        if names:
            for fut in admin.delete_topics(names, operation_timeout=30).values():
                with contextlib.suppress(KafkaException):
                    fut.result(30)
    except KafkaException as exc:  # the broker may be gone with a failed test
        warnings.warn(f"could not delete the topics of {prefix}: {exc}", stacklevel=1)
