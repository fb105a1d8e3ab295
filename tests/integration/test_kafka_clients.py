"""The client factory against a real broker: defaults, sync produce, delivery failures raised."""

from __future__ import annotations

import os

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from support import wait_for

from headrace.errors import ErrorCode, HeadraceError
from headrace.kafka import (
    DeliveryReport,
    flush,
    make_consumer,
    make_producer,
    produce_sync,
    producer_config,
)
from headrace.settings import Settings

pytestmark = pytest.mark.integration


def create(settings: Settings, name: str, **config: str) -> str:
    topic = f"{settings.topic_prefix}{name}"
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result()
    return topic


def test_producer_defaults_are_idempotent_and_acks_all() -> None:
    conf = producer_config(Settings(bootstrap="x:1"))
    assert conf["enable.idempotence"] is True
    assert conf["acks"] == "all"
    assert conf["compression.type"] == "lz4"


def test_produce_sync_then_consume_round_trip(settings: Settings) -> None:
    topic = create(settings, "roundtrip")
    producer = make_producer(settings)
    msg = produce_sync(producer, topic, b"v1", key=b"k", headers=[("h", b"1")])
    assert msg.offset() == 0

    consumer = make_consumer(settings, group_id=f"{settings.topic_prefix}g")
    consumer.subscribe([topic])
    try:
        got = wait_for(lambda: consumer.poll(0.5), 30, "the produced message")
        assert got is not None and got.error() is None
        assert (got.key(), got.value(), got.headers()) == (b"k", b"v1", [("h", b"1")])
        consumer.commit(message=got, asynchronous=False)
    finally:
        consumer.close()


def test_broker_rejection_raises_produce_failed(settings: Settings) -> None:
    topic = create(settings, "tiny", **{"max.message.bytes": "1000"})
    producer = make_producer(settings)
    with pytest.raises(HeadraceError) as err:
        produce_sync(producer, topic, os.urandom(5000), timeout=30)
    assert err.value.code is ErrorCode.KAFKA_PRODUCE_FAILED
    assert topic in err.value.message
    assert err.value.retryable is False


def test_flush_raises_on_failed_deliveries_and_counts_the_rest(settings: Settings) -> None:
    topic = create(settings, "tiny2", **{"max.message.bytes": "1000"})
    producer = make_producer(settings)
    report = DeliveryReport()
    producer.produce(topic, b"ok", on_delivery=report)
    flush(producer, 30, report)
    # In its own batch: the broker rejects a whole batch when one record is too large.
    producer.produce(topic, os.urandom(5000), on_delivery=report)
    with pytest.raises(HeadraceError) as err:
        flush(producer, 30, report)
    assert err.value.code is ErrorCode.KAFKA_PRODUCE_FAILED
    assert report.delivered == 1 and len(report.failures) == 1


def test_produce_to_a_missing_partition_raises(settings: Settings) -> None:
    topic = create(settings, "onepart")
    producer = make_producer(settings)
    with pytest.raises(HeadraceError) as err:
        produce_sync(producer, topic, b"v", partition=7, timeout=20)
    assert err.value.code is ErrorCode.KAFKA_PRODUCE_FAILED
