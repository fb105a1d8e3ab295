"""The task service's batch loop in-process, against the real broker.

No faust worker and no subprocess: a :class:`TaskService` with its producer,
its admin client and a RocksDB store of its own, fed batches of messages the
way its agent is, so a test takes a second or two. Its outputs are read back
off the topics. What a batch can throw at the agent — poison, outputs Kafka
refuses, queues whose topics cannot be made — must end in ``dlq``, never in a
dead agent or a partition retried forever.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka.admin import NewTopic
from rocksdict import Options, Rdict

from headrace.core.decider.effects import effects
from headrace.core.envelope import Event, EventType
from headrace.core.outbox import Outgoing, messages_for
from headrace.core.task_codec import TaskDispatch, decode_dispatch
from headrace.errors import ErrorCode, HeadraceError
from headrace.kafka import make_admin
from headrace.services.tasks import dlq
from headrace.services.tasks import service as service_module
from headrace.services.tasks.config import TaskSettings
from headrace.services.tasks.records import task_key
from headrace.services.tasks.service import TaskService, now_ms
from headrace.settings import Settings
from headrace.streams.batched_store import BatchedChangelogStore
from headrace.streams.partition_reader import Record, read_partition
from headrace.streams.producer import AsyncProducer, MessageRefused

pytestmark = pytest.mark.integration

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class LocalStore(BatchedChangelogStore):
    """The service's store over plain RocksDB databases and a changelog topic of the test's."""

    def __init__(self, table: Any, topic: str, root: Path) -> None:
        super().__init__(table)
        self.topic = topic
        self.root = root
        self.dbs: dict[int, Rdict] = {}

    @property
    def changelog_topic(self) -> str:
        return self.topic

    def db(self, partition: int) -> Any:
        if partition not in self.dbs:
            self.dbs[partition] = Rdict(str(self.root / str(partition)), Options(raw_mode=True))
        return self.dbs[partition]

    def _persist(self, records: list[Outgoing], offsets: list[int]) -> None:
        pass  # no faust table underneath

    def close(self) -> None:
        for db in self.dbs.values():
            db.close()


def create_topic(settings: Settings, name: str, partitions: int, **config: str) -> None:
    admin = make_admin(settings)
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=config)])
    for f in futures.values():
        f.result(30)


class Harness:
    """A task service whose batches the test hands over."""

    def __init__(self, settings: Settings, root: Path, **config: Any) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.service = TaskService(settings, config=TaskSettings(**config))
        changelog = f"{settings.topic_prefix}test-tasks-changelog"
        create_topic(settings, changelog, settings.partitions)
        self.store = LocalStore(self.service.table, changelog, root)
        self.service.store = self.store
        self.service.start_clients()
        self.offset = 0

    async def feed(self, *values: bytes, topic: str | None = None, partition: int = 0) -> None:
        """One batch, as the agent takes it: these values, on ``partition`` of ``topic``."""
        events = []
        for value in values:
            msg = SimpleNamespace(
                topic=topic or self.topics.task_requests,
                partition=partition,
                offset=self.offset,
                key=b"acme/r1",
                value=value,
            )
            self.offset += 1
            events.append(SimpleNamespace(message=msg))
        await asyncio.wait_for(self.service.process(events), 30)

    def has_task(self, task_id: str, partition: int = 0) -> bool:
        return self.store.get(partition, task_key(task_id)) is not None

    def dead_letters(self) -> list[Record]:
        return list(read_partition(self.settings.bootstrap, self.topics.dlq, 0, timeout=10))

    def dispatches(self, queue: str = "work") -> list[TaskDispatch]:
        meta = make_admin(self.settings).list_topics(timeout=10)
        out = []
        for topic in self.topics.task_bands(queue):
            t = meta.topics.get(topic)
            for p in range(len(t.partitions) if t is not None else 0):
                for r in read_partition(self.settings.bootstrap, topic, p, timeout=10):
                    assert r.value is not None
                    out.append(decode_dispatch(r.value))
        return out

    def close(self) -> None:
        assert self.service.producer is not None
        self.service.producer.close(5)
        self.store.close()


@pytest.fixture
def harness(platform: Settings, tmp_path: Path) -> Iterator[Harness]:
    made = Harness(platform, tmp_path / "db", ensure_timeout=1.0)
    yield made
    made.close()


def request(task_id: str | int, queue: str = "work", **kw: Any) -> dict[str, Any]:
    """A ``schedule`` request as the orchestrator's outbox writes it."""
    return {
        "op": "schedule",
        "task_id": task_id,
        "tenant": "acme",
        "run_id": "r1",
        "workflow_type": "order",
        "step": "charge",
        "attempt": 1,
        "queue": queue,
        "input": {"n": 1},
        "priority": 5,
        "timeouts": {},
        "retry": {"max_attempts": 3},
        "idempotency_key": f"r1/{task_id}",
        "config": {},
        **kw,
    }


def raw(req: dict[str, Any]) -> bytes:
    return json.dumps(req).encode()


def header(r: Record, name: str) -> str | None:
    for k, v in r.headers:
        if k == name:
            return None if v is None else v.decode()
    return None


def by_offset(records: list[Record]) -> dict[int, Record]:
    return {int(header(r, "headrace-source-offset") or -1): r for r in records}


# -- poison ------------------------------------------------------------------------------


async def test_poison_is_dead_lettered_with_its_reason_and_leaves_no_partial_state(
    harness: Harness,
) -> None:
    # t2 applies, then its neighbour in the batch record breaks (an int has no .encode)
    half = raw({"op": "batch", "ops": [request("t2"), request(5)]})
    not_ops = raw({"op": "batch", "ops": [1]})
    huge_attempt = raw(request("t3")).replace(b'"attempt": 1', b'"attempt": 1e999')
    nested = b"[" * 100_000 + b"]" * 100_000
    await harness.feed(raw(request("t1")), half, not_ops, huge_attempt, nested, raw(request("t4")))

    dead = by_offset(harness.dead_letters())
    assert sorted(dead) == [1, 2, 3, 4]
    reasons = {offset: header(r, "headrace-error") or "" for offset, r in dead.items()}
    assert reasons[1].startswith("AttributeError")
    assert reasons[2] == "ValueError: a task request is a JSON int, not an object"
    assert reasons[3].startswith("OverflowError")
    assert reasons[4].startswith("RecursionError")
    assert {header(r, "headrace-error-code") for r in dead.values()} == {"HR-WIRE-001"}
    assert dead[1].value == half  # the message itself, for an operator to look at

    # t2 was scheduled before its batch record failed: nothing of it is kept or sent
    assert not harness.has_task("t2") and not harness.has_task("t3")
    assert harness.has_task("t1") and harness.has_task("t4")
    assert sorted(d.task_id for d in harness.dispatches()) == ["t1", "t4"]


# -- outputs Kafka refuses -------------------------------------------------------------


async def test_an_output_kafka_refuses_for_good_dead_letters_its_request_not_the_batch(
    harness: Harness,
) -> None:
    settings = harness.settings
    # queue `tiny`: one partition that takes records of at most 4000 bytes
    create_topic(settings, harness.topics.tasks_band("tiny", 5), 1, **{"max.message.bytes": "4000"})
    noise = base64.b64encode(os.urandom(4500)).decode()  # lz4 cannot shrink it under 4000
    big = raw(request("t-big", input="x" * 1_100_000))  # over the producer's message.max.bytes
    mid = raw(request("t-mid", queue="tiny", input=noise))  # over the topic's limit
    await harness.feed(
        raw(request("t-ok")),
        big,
        mid,
        raw(request("t-small", queue="tiny")),  # shares a record batch with t-mid: innocent
    )

    # decided again without the two: what had gone out already is not sent twice
    assert [d.task_id for d in harness.dispatches("work")] == ["t-ok"]
    assert [d.task_id for d in harness.dispatches("tiny")] == ["t-small"]
    assert not harness.has_task("t-big") and not harness.has_task("t-mid")
    assert harness.has_task("t-ok") and harness.has_task("t-small")

    dead = by_offset(harness.dead_letters())
    assert sorted(dead) == [1, 2]
    assert dead[2].value == mid and header(dead[2], "headrace-error-code") == "HR-KAF-003"
    assert "MSG_SIZE_TOO_LARGE" in (header(dead[2], "headrace-error") or "")
    # t-big's request is itself too large for `dlq`: its headers stand for it
    assert dead[1].value is None and header(dead[1], "headrace-refused-topic") == harness.topics.dlq
    assert "MSG_SIZE_TOO_LARGE" in (header(dead[1], "headrace-error") or "")


async def test_the_producer_names_the_messages_kafka_refused_for_good(platform: Settings) -> None:
    tiny = f"{platform.topic_prefix}tiny"
    create_topic(platform, tiny, 1, **{"max.message.bytes": "4000"})
    producer = AsyncProducer(platform, "test-refused", linger_ms=5)
    try:
        ok = Outgoing(platform.topics.dlq, b"ok")
        too_big = Outgoing(platform.topics.dlq, b"x" * 1_100_000)  # refused before it is sent
        with pytest.raises(MessageRefused) as refused:
            await producer.send([ok, too_big, ok])
        exc = refused.value
        assert list(exc.refused) == [1] and "MSG_SIZE_TOO_LARGE" in exc.refused[1]
        assert exc.permanent and not exc.retryable and exc.code is ErrorCode.KAFKA_PRODUCE_FAILED
        assert exc.offsets[0] >= 0 and exc.offsets[1] == -1 and exc.offsets[2] > exc.offsets[0]

        noise = base64.b64encode(os.urandom(4500))
        with pytest.raises(MessageRefused) as refused:  # refused by the broker
            await producer.send([Outgoing(tiny, noise, partition=0)])
        assert list(refused.value.refused) == [0]
        assert await producer.send([Outgoing(tiny, b"fine", partition=0)]) == [0]
    finally:
        producer.close(5)


# -- deadlines -----------------------------------------------------------------------------


async def test_a_batch_that_sets_an_early_deadline_wakes_the_deadline_loop(
    harness: Harness,
) -> None:
    svc = harness.service
    svc.next_round = now_ms() + 600_000  # the loop sleeps for ten minutes
    await harness.feed(raw(request("t1")))  # no timeouts: no deadline
    assert not svc.wake.is_set()
    await harness.feed(raw(request("t2", timeouts={"schedule_to_start_ms": 50})))
    assert svc.wake.is_set()


# -- queues whose topics cannot be made ------------------------------------------------------


async def test_requests_for_a_queue_whose_topics_cannot_be_made_are_dead_lettered(
    harness: Harness,
) -> None:
    await harness.feed(raw(request("t-bad", queue="bad queue!")), raw(request("t-ok")))
    (dead,) = harness.dead_letters()
    assert header(dead, "headrace-error-code") == ErrorCode.CONFIG_INVALID.code
    assert "bad queue!" in (header(dead, "headrace-error") or "")
    assert [d.task_id for d in harness.dispatches()] == ["t-ok"]
    assert not harness.has_task("t-bad")


async def test_topic_creation_is_retried_with_one_admin_until_its_deadline(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = service_module.ensure_task_topics
    calls: list[tuple[str, Any]] = []

    def flaky(settings: Settings, queue: str, admin: Any = None) -> Any:
        calls.append((queue, admin))
        if queue == "down" or sum(1 for q, _ in calls if q == queue) < 3:
            raise HeadraceError(ErrorCode.KAFKA_UNAVAILABLE, f"no Kafka for {queue}")
        return real(settings, queue, admin)

    monkeypatch.setattr(service_module, "ensure_task_topics", flaky)
    await harness.feed(
        raw(request("t-flaky", queue="flaky")),
        raw(request("t-down1", queue="down")),
        raw(request("t-down2", queue="down")),
    )
    assert [d.task_id for d in harness.dispatches("flaky")] == ["t-flaky"]
    dead = by_offset(harness.dead_letters())
    assert sorted(dead) == [1, 2]
    assert {header(r, "headrace-error-code") for r in dead.values()} == {"HR-KAF-001"}
    admins = {id(a) for _, a in calls}
    assert len(admins) == 1 and None not in {a for _, a in calls}  # one admin, reused
    downs = sum(1 for q, _ in calls if q == "down")
    assert 2 <= downs <= 5  # retried within ensure_timeout (1 s), once for both requests


# -- traceparent -------------------------------------------------------------------------------


async def test_the_runs_traceparent_reaches_the_worker(harness: Harness) -> None:
    scheduled = Event(
        "acme",
        "r1",
        "order",
        1,
        4,
        EventType.TaskScheduled,
        1_000,
        "c1",
        {
            "task_id": "r1:4",
            "step": "charge",
            "attempt": 1,
            "queue": "work",
            "input": {"n": 1},
            "priority": 5,
            "timeouts": {},
            "retry": {},
        },
        idempotency_key="r1/charge",
        traceparent=TP,
    )
    (message,) = messages_for(effects(scheduled), harness.settings.routing)
    assert message.value is not None and json.loads(message.value)["traceparent"] == TP
    await harness.feed(message.value, partition=message.partition or 0)
    (dispatch,) = harness.dispatches()
    assert dispatch.task_id == "r1:4" and dispatch.traceparent == TP
    topic = harness.topics.tasks_band("work", 5)
    meta = make_admin(harness.settings).list_topics(topic, timeout=10)
    headers: list[Mapping[str, Any]] = []
    for p in meta.topics[topic].partitions:
        records = read_partition(harness.settings.bootstrap, topic, p)
        headers.extend(dict(r.headers) for r in records)
    assert [h.get("traceparent") for h in headers] == [TP.encode()]


# -- the DLQ reader ------------------------------------------------------------------------------


def test_the_dlq_reader_reads_every_partition_and_names_a_missing_entry(
    platform: Settings,
) -> None:
    topic = platform.topics.tasks_dlq("multi")
    create_topic(platform, topic, 3)
    producer = AsyncProducer(platform, "test-dlq")

    def record(body: dict[str, Any], partition: int) -> Outgoing:
        return Outgoing(topic, json.dumps(body).encode(), body["id"], partition)

    dead = {"status": "dead", "queue": "multi", "tenant": "acme", "parked": True}
    messages = [
        record({**dead, "id": "e0", "run_id": "r0", "time": 3}, 0),
        record({**dead, "id": "e1", "run_id": "r1", "time": 1}, 1),
        record({**dead, "id": "e2", "run_id": "r2", "time": 2}, 2),
        record({"status": "redriven", "id": "e2", "queue": "multi", "time": 5}, 2),
    ]
    try:
        asyncio.run(producer.send(messages))
    finally:
        producer.close(5)
    entries = dlq.read_entries(platform, "multi")
    assert list(entries) == ["e1", "e2", "e0"]  # oldest first, across partitions
    assert entries["e2"].status == "redriven" and entries["e0"].redrivable
    assert dlq.find(platform, "e1").record["run_id"] == "r1"
    with pytest.raises(HeadraceError) as missing:
        dlq.find(platform, "nope", "multi")
    assert missing.value.code is ErrorCode.DLQ_ENTRY_NOT_FOUND
    assert missing.value.code.code == "HR-TASK-004"
