"""faust acknowledges a take_events batch even when processing it fails; run_batches does not."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import NewTopic
from support import wait_for

from headrace.kafka import flush, make_admin, make_producer
from headrace.settings import Settings

pytestmark = pytest.mark.integration

APP = Path(__file__).with_name("batch_app.py")


def _committed(bootstrap: str, group: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        (tp,) = c.committed([TopicPartition(topic, 0)], timeout=10)
        return tp.offset
    finally:
        c.close()


def _run(settings: Settings, topic: str, mode: str, tmp_path: Path) -> tuple[str, subprocess.Popen]:
    app_id = f"batches-{mode}-{uuid.uuid4().hex[:6]}"
    proc = subprocess.Popen(
        [sys.executable, str(APP), settings.bootstrap, topic, app_id, str(tmp_path / app_id), mode],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return app_id, proc


def test_a_failed_batch_is_never_acknowledged(settings: Settings, tmp_path: Path) -> None:
    topic = f"{settings.topic_prefix}batches"
    admin = make_admin(settings)
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = make_producer(settings)
    for value in (b"a", b"b", b"boom", b"c"):
        producer.produce(topic, value, b"k", partition=0)
    flush(producer)

    # faust alone: the failing batch is acknowledged and its offsets committed.
    group, plain = _run(settings, topic, "plain", tmp_path)
    try:
        wait_for(
            lambda: _committed(settings.bootstrap, group, topic) >= 3,
            60,
            "faust to commit past the failed batch",
        )
    finally:
        plain.kill()
        plain.wait(30)

    # run_batches: the worker stops without acknowledging anything of that batch.
    group, safe = _run(settings, topic, "safe", tmp_path)
    try:
        code = safe.wait(60)
    finally:
        safe.kill()
    assert code == 70, safe.stderr.read().decode()[-2000:] if safe.stderr else code
    assert _committed(settings.bootstrap, group, topic) < 3
