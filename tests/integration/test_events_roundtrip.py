"""Sealed events through a real broker: keyed and partitioned by run, read back, verified."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import pytest
from support import wait_for

from headrace.core.chain import Break, seal, verify
from headrace.core.codec import decode_event
from headrace.core.envelope import Event, EventType
from headrace.core.partitioner import partition_for, run_key
from headrace.kafka import DeliveryReport, flush, make_admin, make_consumer, make_producer
from headrace.settings import Settings
from headrace.topic_admin import ensure, plan_topics

pytestmark = pytest.mark.integration

SPREAD = {"bigco": 3}


@pytest.fixture
def events_topic(settings: Settings) -> Iterator[str]:
    name = settings.topics.events
    ensure(settings, [p for p in plan_topics(settings) if p.name == name])
    yield name
    make_admin(settings).delete_topics([name])


def _events(tenant: str, run_id: str, n: int) -> list[Event]:
    types = [EventType.RunStarted] + [EventType.StepCompleted] * (n - 2) + [EventType.RunCompleted]
    return [
        Event(
            tenant,
            run_id,
            "order",
            1,
            seq,
            types[seq - 1],
            1_735_689_600_000 + seq,
            f"cmd-{seq}",
            {"seq": seq, "note": "grüße ✓"},
            idempotency_key=f"{run_id}/step-{seq}",
        )
        for seq in range(1, n + 1)
    ]


def _produce(settings: Settings, topic: str, messages: list[tuple[str, bytes]]) -> None:
    producer = make_producer(settings, client_id="cwe-roundtrip")
    report = DeliveryReport()
    for key, value in messages:
        tenant, run_id = key.split("/", 1)
        partition = partition_for(tenant, run_id, settings.partitions, SPREAD)
        producer.produce(topic, key=key, value=value, partition=partition, on_delivery=report)
    flush(producer, report=report)
    assert report.delivered == len(messages)


def _consume(
    settings: Settings, topic: str, expected: int
) -> tuple[dict[str, list[bytes]], dict[str, set[int]]]:
    """Read ``expected`` messages with a consumer of its own; values and partitions per key."""
    consumer = make_consumer(settings, group_id=f"{settings.topic_prefix}verifier")
    consumer.subscribe([topic])
    values: dict[str, list[bytes]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    seen = 0

    def read_all() -> bool:
        nonlocal seen
        for msg in consumer.consume(num_messages=100, timeout=0.5):
            assert msg.error() is None, msg.error()
            key, value, partition = msg.key(), msg.value(), msg.partition()
            assert key is not None and value is not None and partition is not None
            values[key.decode()].append(value)
            partitions[key.decode()].add(partition)
            seen += 1
        return seen >= expected

    try:
        wait_for(read_all, timeout=60, what=f"{expected} messages on {topic}")
    finally:
        consumer.close()
    assert seen == expected
    return values, partitions


def test_sealed_runs_round_trip_through_kafka_and_verify(
    settings: Settings, events_topic: str
) -> None:
    runs = {
        run_key(t, r): seal(_events(t, r, n))
        for t, r, n in [
            ("acme", "r1", 5),
            ("acme", "r2", 8),
            ("bigco", "r3", 4),
            ("bigco", "r4", 6),
        ]
    }
    # Interleave the runs as an orchestrator would, and redeliver one event.
    messages = []
    for i in range(max(len(s) for s in runs.values())):
        for key, sealed in runs.items():
            if i < len(sealed):
                messages.append((key, sealed[i][1]))
    messages.append(("acme/r2", runs["acme/r2"][3][1]))
    _produce(settings, events_topic, messages)

    values, partitions = _consume(settings, events_topic, len(messages))

    assert set(values) == set(runs)
    for key, sealed in runs.items():
        tenant, run_id = key.split("/")
        assert partitions[key] == {partition_for(tenant, run_id, settings.partitions, SPREAD)}
        report = verify(values[key], run_key=key)
        assert report.ok, f"{key}: {report}"
        assert report.count == len(sealed)
        assert report.duplicates == (1 if key == "acme/r2" else 0)
        assert report.head == sealed[-1][0].hash
        decoded = {e.seq: e for e in map(decode_event, values[key])}
        assert [decoded[s] for s in sorted(decoded)] == [event for event, _ in sealed]


def test_a_tampered_message_in_the_topic_fails_verification_at_its_seq(
    settings: Settings, events_topic: str
) -> None:
    key = run_key("acme", "audited")
    records = [raw for _, raw in seal(_events("acme", "audited", 5))]
    tampered = bytearray(records[2])
    # The payload's last character, just before prev_hash and hash.
    assert tampered[-65:-64] == b"}"
    tampered[-66] ^= 0x01
    log = [*records[:2], bytes(tampered), *records[2:]]
    _produce(settings, events_topic, [(key, raw) for raw in log])

    values, _ = _consume(settings, events_topic, len(log))

    report = verify(values[key], run_key=key)
    assert not report.ok
    assert (report.reason, report.bad_seq, report.index) == (Break.TAMPERED, 3, 2)
    assert report.last_seq == 2
    # Without the tampered copy, the same messages verify.
    assert verify([v for v in values[key] if v != bytes(tampered)], run_key=key).ok
