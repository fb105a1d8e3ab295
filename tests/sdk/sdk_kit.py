"""Play the task service's part for worker tests: produce dispatches, read results.

A test produces Avro ``TaskDispatch`` records to ``tasks.<queue>[.p<band>]``
and reads ``TaskResult`` records back from ``task-results`` — the protocol of
docs/tasks.md, with no task service involved.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from support import wait_for

from headrace.core.task_codec import (
    DispatchKind,
    ResultKind,
    TaskDispatch,
    TaskResult,
    decode_result,
    encode_dispatch,
)
from headrace.kafka import flush, make_producer
from headrace.sdk import Worker
from headrace.settings import Settings
from headrace.topic_admin import ensure_task_topics


def make_dispatch(
    settings: Settings, queue: str, step: str, input: Any = None, **kw: Any
) -> TaskDispatch:
    """A dispatch as the task service would write it (result partition: 0..P-1 by hash)."""
    task_id = kw.pop("task_id", f"task-{uuid.uuid4().hex[:10]}")
    run_id = kw.pop("run_id", f"run-{uuid.uuid4().hex[:8]}")
    tenant = kw.pop("tenant", "acme")
    fields: dict[str, Any] = {
        "task_id": task_id,
        "attempt": 1,
        "idempotency_key": f"{run_id}/{step}",
        "queue": queue,
        "priority": 5,
        "tenant": tenant,
        "run_id": run_id,
        "workflow_type": "test-flow",
        "step": step,
        "input": input if input is not None else {},
        "config": {},
        "dispatched_at": int(time.time() * 1000),
        "result_topic": settings.topics.task_results,
        "result_key": f"{tenant}/{run_id}",
        "result_partition": settings.routing.partition(tenant, run_id),
        "start_to_close_ms": 30_000,
    }
    fields.update(kw)
    return TaskDispatch(**fields)


class Dispatcher:
    """Produces dispatches to the right band topic, keyed by task id."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = make_producer(settings, "test-task-service")
        self._queues: set[str] = set()

    def send(self, *dispatches: TaskDispatch, partition: int | None = None) -> list[TopicPartition]:
        """Produce and wait; returns where each dispatch landed (topic, partition, offset).

        ``partition`` pins them to one partition (else the key decides)."""
        landed: list[TopicPartition] = []

        def delivered(err: Any, msg: Any) -> None:
            assert err is None, err
            landed.append(TopicPartition(msg.topic(), msg.partition(), msg.offset()))

        for d in dispatches:
            if d.queue not in self._queues:
                # Like the task service: a queue's topics exist before its first dispatch
                # (else a broker with auto-create would make a one-partition topic).
                ensure_task_topics(self.settings, d.queue)
                self._queues.add(d.queue)
            topic = self.settings.topics.tasks_band(d.queue, d.priority)
            where = {} if partition is None else {"partition": partition}
            self.producer.produce(
                topic, value=encode_dispatch(d), key=d.task_id, on_delivery=delivered, **where
            )
        flush(self.producer)
        return landed

    def cancel(self, d: TaskDispatch, partition: int | None = None) -> list[TopicPartition]:
        return self.send(replace(d, kind=DispatchKind.CANCEL), partition=partition)

    def raw(self, topic: str, value: bytes, key: str) -> None:
        self.producer.produce(topic, value=value, key=key)
        flush(self.producer)


@dataclass(frozen=True, slots=True)
class Seen:
    """A result as read from task-results, with where it was."""

    result: TaskResult
    key: str
    partition: int
    offset: int


class Results:
    """Reads every record of ``task-results`` in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap,
                "group.id": f"results-reader-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
            }
        )
        topic = settings.topics.task_results
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.partitions)]
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            first = self._consumer.poll(0.05)
            if first is None:
                continue
            # consume() waits for a full batch or its timeout; take only what is there.
            msgs = [first, *self._consumer.consume(1000, 0)]
            batch = [
                Seen(
                    decode_result(msg.value() or b""),
                    (msg.key() or b"").decode(),
                    msg.partition() or 0,
                    msg.offset() or 0,
                )
                for msg in msgs
                if not msg.error()
            ]
            with self._lock:
                self.seen.extend(batch)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()

    def of(self, task_id: str, kind: ResultKind | None = None) -> list[Seen]:
        with self._lock:
            return [
                s
                for s in self.seen
                if s.result.task_id == task_id and (kind is None or s.result.kind is kind)
            ]

    def final(self, task_id: str, timeout: float = 30.0) -> Seen:
        """The first completed/failed result of ``task_id`` (waits for it)."""

        def find() -> Seen | None:
            for s in self.of(task_id):
                if s.result.kind in (ResultKind.COMPLETED, ResultKind.FAILED):
                    return s
            return None

        return wait_for(find, timeout, f"a final result of {task_id}")

    def by_task(self) -> dict[str, list[Seen]]:
        out: dict[str, list[Seen]] = defaultdict(list)
        with self._lock:
            for s in self.seen:
                out[s.result.task_id].append(s)
        return out


class WorkerThread:
    """Runs ``worker.serve(**serve_options)`` on its own loop in a thread; ``stop`` drains it."""

    def __init__(self, worker: Worker, **serve_options: Any) -> None:
        self.worker = worker
        self.serve_options = serve_options
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self.worker.serve(**self.serve_options))
        except BaseException as exc:
            self.error = exc

    def start(self) -> WorkerThread:
        self._thread.start()
        wait_for(lambda: self.worker.started.is_set() or self.error, 60, "the worker to start")
        assert self.error is None, self.error
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self.worker.stop()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the worker did not stop"
        if self.error is not None:
            raise self.error

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


def committed(settings: Settings, queue: str, where: TopicPartition) -> int:
    """The committed offset of the queue's worker group on ``where``'s partition (-1001: none)."""
    from headrace.kafka import make_consumer
    from headrace.sdk.fetcher import group_id

    c = make_consumer(settings, group_id(settings, queue))
    try:
        [tp] = c.committed([TopicPartition(where.topic, where.partition)], timeout=10)
        return tp.offset
    finally:
        c.close()


def group_members(settings: Settings, queue: str) -> list[list[TopicPartition]]:
    """The partitions each member of the queue's worker group holds."""
    from headrace.kafka import make_admin
    from headrace.sdk.fetcher import group_id

    gid = group_id(settings, queue)
    admin = make_admin(settings)
    desc = admin.describe_consumer_groups([gid])[gid].result(10)
    return [list(m.assignment.topic_partitions) for m in desc.members]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at ``host`` (for a server the test starts)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def http_get(host: str, port: int, path: str) -> tuple[int, bytes]:
    """Status and body of ``GET http://host:port/path`` (any status, no exception for 5xx)."""
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()
