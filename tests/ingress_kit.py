"""Shared pieces of the router and run CLI tests: topics, deploys, a running router, reads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Producer, TopicPartition
from support import wait_for

from headrace.core.chain import seal
from headrace.core.dsl.load import load_definition
from headrace.core.envelope import Event, EventType
from headrace.definitions import DefinitionCatalog, DeployOutcome, deploy
from headrace.kafka import make_admin, make_consumer, make_producer, produce_sync
from headrace.settings import Settings
from headrace.streams.cloudevents_in import OutgoingEvent
from headrace.streams.router import Router
from headrace.topic_admin import ensure_topics

ORDER = """
type: order
version: 1
input_schema:
  type: object
  required: [order_id]
  properties:
    order_id: {type: string}
    total: {type: number, minimum: 0}
triggers:
  - event_type: com.example.order.placed
    source: /shop
    filter: .data.total > 100
    input: "{order_id: .data.id, total: .data.total}"
    run_id: '"order-" + .data.id'
steps:
  - {name: charge, kind: task, queue: payments, timeouts: {start_to_close: 30s},
     retry: {max_attempts: 3}}
"""

AUDIT = """
type: audit
version: 1
triggers:
  - event_type: com.example.order.placed
steps:
  - {name: note, kind: set, value: "."}
"""


_PRODUCERS: dict[str, Producer] = {}


def _producer(settings: Settings) -> Producer:
    """One producer per broker for the whole session: an idempotent producer's start costs
    a round trip to the broker, which adds up over hundreds of sends."""
    p = _PRODUCERS.get(settings.bootstrap)
    if p is None:
        p = _PRODUCERS[settings.bootstrap] = make_producer(settings, "tests", linger_ms=0)
    return p


def create_topics(settings: Settings) -> None:
    ensure_topics(settings, partitions=settings.partitions)


def delete_topics(settings: Settings) -> None:
    admin = make_admin(settings)
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(settings.topic_prefix)]
    if names:
        for f in admin.delete_topics(names, operation_timeout=30).values():
            f.result()


def deploy_yaml(settings: Settings, *texts: str) -> list[DeployOutcome]:
    return deploy(settings, [(load_definition(t), t) for t in texts], by="tests")


@dataclass
class RunningRouter:
    router: Router
    catalog: DefinitionCatalog
    thread: threading.Thread
    errors: list[BaseException]


@contextmanager
def running_router(settings: Settings, **kwargs: object) -> Iterator[RunningRouter]:
    """A router in a thread of this process, assigned its partitions before the body runs."""
    catalog = DefinitionCatalog(settings).start(wait=30)
    router = Router(settings, catalog, **kwargs)  # type: ignore[arg-type]
    assigned = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            router.run(on_assigned=assigned.set)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="router", daemon=True)
    thread.start()
    wait_for(lambda: assigned.is_set() or errors, 60, "the router's partition assignment")
    try:
        yield RunningRouter(router, catalog, thread, errors)
    finally:
        router.stop()
        thread.join(30)
        catalog.stop()
    assert not errors, errors
    assert not thread.is_alive(), "the router did not stop"


def produce_event(settings: Settings, event: OutgoingEvent, partition: int | None = None) -> None:
    producer = _producer(settings)
    produce_sync(
        producer,
        settings.topics.ingress,
        event.value,
        key=event.key,
        headers=event.headers,
        partition=partition,
    )


def produce_raw(
    settings: Settings,
    value: bytes | None,
    *,
    key: bytes | None = None,
    headers: list[tuple[str, bytes | None]] | None = None,
    partition: int | None = None,
) -> None:
    producer = _producer(settings)
    produce_sync(
        producer,
        settings.topics.ingress,
        value,
        key=key,
        headers=headers,  # type: ignore[arg-type]
        partition=partition,
    )


@dataclass(frozen=True)
class Read:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode() if v is not None else None
        return None


def read_topic(settings: Settings, topic: str, count: int, timeout: float = 30.0) -> list[Read]:
    """The first ``count`` records of ``topic`` (all partitions), or fail after ``timeout``."""
    consumer = make_consumer(settings, f"{settings.topic_prefix}reader", enable_partition_eof=False)
    meta = consumer.list_topics(topic, timeout=10)
    parts = sorted(meta.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out: list[Read] = []
    try:

        def enough() -> bool:
            for m in consumer.consume(500, 0.2):
                if m.error() is None:
                    out.append(
                        Read(m.partition(), m.offset(), m.key(), m.value(), m.headers() or [])
                    )
            return len(out) >= count

        wait_for(enough, timeout, f"{count} record(s) on {topic}")
        return out
    finally:
        consumer.close()


def _watermarks(consumer: Any, tp: TopicPartition) -> tuple[int, int]:
    """Watermarks of ``tp``; a topic created a moment ago may briefly answer
    NOT_LEADER while its leader is elected, so that one error is retried."""
    deadline = time.monotonic() + 15
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            return int(low), int(high)
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args else None
            if code != KafkaError.NOT_LEADER_FOR_PARTITION or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def topic_size(settings: Settings, topic: str) -> int:
    """How many records ``topic`` holds right now."""
    consumer = make_consumer(settings, f"{settings.topic_prefix}sizer")
    try:
        meta = consumer.list_topics(topic, timeout=10)
        total = 0
        for p in meta.topics[topic].partitions:
            low, high = _watermarks(consumer, TopicPartition(topic, p))
            total += high - low
        return total
    finally:
        consumer.close()


def run_events(
    tenant: str, run_id: str, ending: EventType = EventType.RunCompleted, steps: int = 2
) -> list[Event]:
    """A plausible run's events, unsealed: started, ``steps`` task steps, then ``ending``."""
    kinds: list[tuple[EventType, dict[str, object]]] = [
        (EventType.RunStarted, {"workflow": "order", "version": 1, "input": {"order_id": "o"}})
    ]
    for i in range(steps):
        step = f"step-{i}"
        kinds += [
            (EventType.StepStarted, {"step": step}),
            (EventType.TaskScheduled, {"step": step, "queue": "payments", "attempt": 1}),
            (EventType.TaskCompleted, {"step": step, "result": {"n": i}}),
            (EventType.StepCompleted, {"step": step}),
        ]
    ends = {
        EventType.RunCompleted: {"output": {"ok": True}},
        EventType.RunFailed: {"error": {"code": "card-declined", "message": "no funds"}},
    }
    kinds.append((ending, ends.get(ending, {})))
    return [
        Event(tenant, run_id, "order", 1, seq, kind, 1_764_000_000_000 + seq, f"cmd-{seq}", p)
        for seq, (kind, p) in enumerate(kinds, start=1)
    ]


def produce_sealed(
    settings: Settings, events: list[Event], *, duplicate: int | None = None
) -> list[bytes]:
    """Seal ``events`` (one run) onto a chain and write them to ``events`` at the run's partition;
    ``duplicate`` re-sends that seq's bytes right after it, as a redelivery would."""
    sealed = [raw for _, raw in seal(events)]
    return produce_raw_events(settings, events[0].tenant, events[0].run_id, sealed, duplicate)


def produce_raw_events(
    settings: Settings,
    tenant: str,
    run_id: str,
    values: list[bytes],
    duplicate: int | None = None,
) -> list[bytes]:
    producer = _producer(settings)
    partition = settings.routing.partition(tenant, run_id)
    for seq, value in enumerate(values, start=1):
        for _ in range(2 if seq == duplicate else 1):
            producer.produce(
                settings.topics.events, value, key=f"{tenant}/{run_id}", partition=partition
            )
    assert producer.flush(30) == 0
    return values
