"""The task service: a faust worker over ``task-requests`` and ``task-results``.

One agent (concurrency 1) takes both topics in batches (``take_events``).
They are co-partitioned with ``commands``: the orchestrator writes a run's
requests to the run's partition, and every dispatch names that partition as
``result_partition``, so a worker's results come back to the worker that
holds the task. Per batch:

1. apply each request or result to its partition's records through a
   :class:`~headrace.services.tasks.lifecycle.View` (nothing written yet) —
   on a scratch overlay of its own, merged only if the whole message went
   through; creating first the topics of queues seen for the first time
   (``tasks.<queue>``, its priority bands and its DLQ — idempotent). A message
   that raises anything, or whose queue's topics cannot be made, goes to
   ``dlq`` with the reason and changes nothing;
2. produce the batch's dispatches, commands (``TaskStarted``, ``CompleteTask``,
   ``FailTask``) and DLQ records, and wait for every acknowledgement;
3. produce the changelog records of its state changes and wait; then write
   the changes to RocksDB (one write per partition), and faust may
   acknowledge the batch.

Kafka failures that may pass are retried until they do. A message Kafka
refuses for good (too large, say: :class:`~headrace.streams.producer.MessageRefused`)
is blamed on the input that led to it, which goes to ``dlq``; the batch is
then decided again without that input (nothing of it was written yet), and
what Kafka already took is not sent again.

A crash before the changelog is acknowledged redoes the batch from its
inputs, producing the same messages again: commands address one attempt and
the decider ignores a second one, a dispatch is a duplicate delivery the
idempotency key covers. A crash after it and before the local write leaves
the changes in the changelog, which the next owner of the partition (or this
worker, restarted) recovers before it takes the batch again — and then finds
it done, its outputs acknowledged.

The **deadline loop** scans each owned partition's due-time index for
timeouts (schedule-to-start, start-to-close, heartbeat) and for finished
records whose retention is over; it produces ``TimeoutTask`` commands (and
DLQ records after a last attempt) the same way, produce first, commit after.
The loop and the agent take turns (one lock), so a result and a timeout of
one attempt are never decided at once: whichever comes second finds the
attempt ended and is ignored.

The table ``tasks`` has a changelog (records go out in awaited batches,
:class:`~headrace.streams.batched_store.BatchedChangelogStore`), so a
partition's tasks move with its ``task-requests`` partition when workers come
and go. A partition's deadlines are watched only between the end of its
recovery (``on_rebalance_complete``) and its revocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from headrace.core.outbox import Outgoing, command_message
from headrace.core.task_codec import decode_result, encode_dispatch
from headrace.errors import ErrorCode, HeadraceError
from headrace.kafka import make_admin
from headrace.services.tasks import metrics
from headrace.services.tasks.config import TaskSettings
from headrace.services.tasks.lifecycle import Lifecycle, Outbox, View
from headrace.services.tasks.records import DUE, due_after, due_range, split_due_key
from headrace.settings import Settings
from headrace.streams.app import bytes_table, make_app, raw_topic
from headrace.streams.batched_store import BatchedChangelogStore
from headrace.streams.producer import AsyncProducer, MessageRefused
from headrace.topic_admin import ensure_task_topics

log = logging.getLogger("headrace.tasks")

TABLE = "tasks"
_NEVER = 2**62
_REFUSED = "headrace-refused-topic"  # header of a dlq note standing for a refused message

Rejection = tuple[ErrorCode, str]
"""Why an input message goes to ``dlq``: an error code and a message for operators."""


def now_ms() -> int:
    return int(time.time() * 1000)


_Sig = tuple[str, int | None, bytes | str | None, bytes | None, tuple[tuple[str, bytes], ...]]


def _sig(m: Outgoing) -> _Sig:
    """What makes two messages the same message."""
    return m.topic, m.partition, m.key, m.value, tuple(m.headers or ())


def _rejection(exc: Exception) -> Rejection:
    if isinstance(exc, HeadraceError):
        return exc.code, exc.message
    return ErrorCode.DECODE_FAILED, f"{type(exc).__name__}: {exc}"


@dataclass
class _Round:
    """One round of a batch's decisions: the views and the messages, not produced yet."""

    views: dict[int, View] = field(default_factory=dict)
    messages: list[Outgoing] = field(default_factory=list)
    origins: list[int | None] = field(default_factory=list)  # the input each message is for
    writers: dict[tuple[int, bytes], int] = field(default_factory=dict)  # last input per key

    def add(self, messages: list[Outgoing], origin: int | None) -> None:
        self.messages.extend(messages)
        self.origins.extend([origin] * len(messages))

    def earliest_due(self) -> int:
        """The earliest deadline the views set (``_NEVER``: none)."""
        return min(
            (split_due_key(k)[0] for v in self.views.values() for k in v.puts if k[:1] == DUE),
            default=_NEVER,
        )


class TaskService:
    """One task-service worker. ``run()`` blocks until SIGTERM."""

    def __init__(
        self,
        settings: Settings,
        *,
        instance: str = "0",
        web_port: int | None = None,
        config: TaskSettings | None = None,
    ) -> None:
        self.settings = settings
        self.config = config or TaskSettings()
        self.topics = settings.topics
        self.routing = settings.routing
        self.app = make_app(settings, "tasks", instance=instance, web_port=web_port)
        topics = self.topics
        self.source = raw_topic(self.app, settings, topics.task_requests, topics.task_results)
        self.table = bytes_table(self.app, settings, TABLE)
        self.store = BatchedChangelogStore(self.table)
        self.lifecycle = Lifecycle(self.topics, int(self.config.retain_finished * 1000))
        self.producer: AsyncProducer | None = None
        self.admin: AdminClient | None = None  # one for the worker's life (queue topics)
        self.active: set[int] = set()
        self.known_queues: set[str] = set()
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.next_round = 0  # epoch ms the deadline loop wakes up at, at the latest
        self.app.agent(self.source, concurrency=1, name="tasks")(self._agent)
        self.app.task(self._deadline_loop)
        # faust's Signal.connect is typed for a keyword-only `signal` argument.
        self.app.on_rebalance_complete.connect(self._on_rebalance_complete)  # type: ignore[arg-type]
        self.app.on_partitions_revoked.connect(self._on_partitions_revoked)  # type: ignore[arg-type]

    def _producer(self) -> AsyncProducer:
        assert self.producer is not None, "start_clients() first"
        return self.producer

    def _admin(self) -> AdminClient:
        if self.admin is None:
            self.admin = make_admin(self.settings, "headrace-tasks-admin")
        return self.admin

    def start_clients(self) -> None:
        if self.producer is None:
            self.producer = AsyncProducer(self.settings, "headrace-tasks", linger_ms=1)

    # -- ownership -------------------------------------------------------------

    async def _on_rebalance_complete(self, sender: Any = None, **_: Any) -> None:
        owned = {
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == self.topics.task_requests
        }
        async with self.lock:
            self.active = owned
        metrics.ACTIVE_PARTITIONS.set(len(owned))
        self.wake.set()
        log.info("watching task deadlines", extra={"partitions": sorted(owned)})

    async def _on_partitions_revoked(self, sender: Any, revoked: Any = None, **_: Any) -> None:
        gone = {tp.partition for tp in revoked or () if tp.topic == self.topics.task_requests}
        async with self.lock:  # no deadline round is in flight once we hold it
            self.active -= gone
        metrics.ACTIVE_PARTITIONS.set(len(self.active))
        # Changelog records go out before the next owner recovers the partitions.
        await self._until_sent(None)

    # -- requests and results ---------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        async for batch in stream.take_events(self.config.batch, within=self.config.batch_within):
            await self.process(batch)

    async def process(self, events: Iterable[Any]) -> None:
        """Apply a batch of requests and results; produce what they cause; then commit.

        A message that cannot be applied — unreadable, or anything else it makes
        go wrong — goes to ``dlq`` with the reason and changes nothing; so does one
        whose queue's topics cannot be created, or whose output (or state) Kafka
        refuses for good: the batch is then decided again without it.
        """
        started = time.perf_counter()
        batch = [ev.message for ev in events]
        if not batch:
            return
        async with self.lock:
            now = now_ms()
            rejected: dict[int, Rejection] = {}
            bad_queues: dict[str, Rejection] = {}
            acked: set[_Sig] = set()  # sent in an earlier round: not sent again
            while True:
                plan = await self._decide(batch, now, rejected, bad_queues)
                earliest = plan.earliest_due()  # before the commit empties the views
                refused = await self._commit(plan, acked)
                if not refused:
                    break
                # What went out is idempotent downstream; the batch's state is not written yet.
                for i, why in refused.items():
                    self._reject(batch[i], why)
                rejected.update(refused)
            self._note_deadlines(earliest)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)

    async def _decide(
        self,
        batch: list[Any],
        now: int,
        rejected: dict[int, Rejection],
        bad_queues: dict[str, Rejection],
    ) -> _Round:
        """Apply every message of ``batch`` but the ``rejected`` (those, and new failures: dlq)."""
        plan = _Round()
        for i, msg in enumerate(batch):
            p: int = msg.partition
            view = plan.views.get(p)
            if view is None:
                view = plan.views[p] = View(self.store, p)
            why = rejected.get(i)
            if why is None:
                why = await self._decide_one(plan, i, msg, view, now, bad_queues)
                if why is not None:
                    self._reject(msg, why)
                    rejected[i] = why
            if why is not None:
                plan.add([self._dead_letter(msg, *why)], i)
        return plan

    async def _decide_one(
        self,
        plan: _Round,
        index: int,
        msg: Any,
        view: View,
        now: int,
        bad_queues: dict[str, Rejection],
    ) -> Rejection | None:
        """Apply one message to a scratch overlay of ``view``; keep it only if all went well."""
        scratch = view.scratch()
        out = Outbox()
        try:
            self._apply(scratch, msg, now, out)
            messages = self._messages(out)
        except Exception as exc:  # whatever a message provokes, it must not stop the agent
            return _rejection(exc)
        for queue in sorted(out.queues - self.known_queues):
            why = bad_queues.get(queue)
            if why is None:
                why = await self._ensure_queue(queue)
            if why is not None:
                bad_queues[queue] = why
                return why
        view.merge(scratch)
        for key in scratch.puts:
            plan.writers[(view.partition, key)] = index
        plan.add(messages, index)
        return None

    def _apply(self, view: View, msg: Any, now: int, out: Outbox) -> None:
        if msg.topic == self.topics.task_results:
            result = decode_result(msg.value)
            reason = self.lifecycle.result(view, result, now, out)
            if reason is not None:
                log.info(
                    "ignored %s result of task %s attempt %d (%s)",
                    result.kind.value,
                    result.task_id,
                    result.attempt,
                    {
                        "unknown": "no such task here",
                        "attempt": "not its current attempt",
                        "finished": "the attempt already ended",
                    }[reason],
                    extra={"task_id": result.task_id, "reason": reason},
                )
            return
        request = json.loads(msg.value)
        if not isinstance(request, dict):
            raise ValueError(f"a task request is a JSON {type(request).__name__}, not an object")
        # {"op": "batch", "ops": [...]}: several requests of one partition in one record
        for op in request["ops"] if request.get("op") == "batch" else (request,):
            if not isinstance(op, dict):
                raise ValueError(f"a task request is a JSON {type(op).__name__}, not an object")
            kind = op.get("op")
            if kind == "schedule":
                self.lifecycle.schedule(view, op, now, out)
            elif kind == "cancel":
                self.lifecycle.cancel(view, op, now, out)
            else:
                raise ValueError(f"unknown task request op {kind!r} (expected schedule or cancel)")

    def _messages(self, out: Outbox) -> list[Outgoing]:
        """The messages of ``out``, encoded (an encoding failure is the message's fault)."""
        messages = [command_message(c, self.routing) for c in out.commands]
        for topic, d in zip(out.dispatch_topics, out.dispatches, strict=True):
            headers = [("headrace-op", d.kind.value.encode())]
            if d.traceparent:
                headers.append(("traceparent", d.traceparent.encode()))
            messages.append(Outgoing(topic, encode_dispatch(d), d.task_id, None, headers))
        messages.extend(out.dlq)
        return messages

    async def _ensure_queue(self, queue: str) -> Rejection | None:
        """Create the topics of ``queue`` (idempotent); why not, if it cannot be done.

        Failures that may pass (Kafka unreachable, a timeout) are retried with
        backoff for ``ensure_timeout`` seconds; the others (an invalid topic name,
        a replication the cluster cannot give) are final at once.
        """
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.config.ensure_timeout
        delay = 0.2
        while True:
            try:
                await loop.run_in_executor(
                    None, ensure_task_topics, self.settings, queue, self._admin()
                )
            except Exception as exc:
                if isinstance(exc, HeadraceError):
                    code, detail, retryable = exc.code, exc.message, exc.retryable
                elif isinstance(exc, KafkaException):  # an admin call failed: transient
                    code, detail, retryable = ErrorCode.KAFKA_UNAVAILABLE, str(exc), True
                else:
                    code, detail, retryable = ErrorCode.INTERNAL, repr(exc), False
                if not retryable or time.monotonic() + delay > deadline:
                    log.error(
                        "cannot create the topics of task queue %s; its requests go to the DLQ: %s",
                        queue,
                        detail,
                        extra={"queue": queue},
                    )
                    return code, f"cannot create the topics of task queue {queue!r}: {detail}"
                log.warning(
                    "creating the topics of task queue %s failed, retrying in %.1f s: %s",
                    queue,
                    delay,
                    detail,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.known_queues.add(queue)
            return None

    async def _commit(self, plan: _Round, acked: set[_Sig]) -> dict[int, Rejection]:
        """Produce the plan's messages; once Kafka has acknowledged them, its views'
        changelog records; once those are acknowledged too, write the views to RocksDB.

        Two round trips, not one: a batch is not atomic across partitions, and a
        worker killed with the changelog records acknowledged but a dispatch or a
        command still in its buffer would come back with the task recorded as
        dispatched (or completed) and nothing to show for it downstream.

        Returns the input messages whose output or state Kafka refused for good
        (by index in the batch, with the reason): nothing is written then, and the
        caller decides the batch again without them; what Kafka took meanwhile is
        added to ``acked``, and not sent again.
        """
        pending = list(zip(plan.messages, plan.origins, strict=True))
        if acked:
            pending = [(m, o) for m, o in pending if _sig(m) not in acked]
        rejected = await self._produce(pending, acked)
        if rejected:
            return rejected
        staged = [
            (v, self.store.changelog_records(v.partition, v.puts, list(v.deletes)))
            for v in plan.views.values()
            if v.puts or v.deletes
        ]
        records = [r for _, rs in staged for r in rs]
        if not records:
            return {}
        offsets, refused = await self._send(records)
        if refused:
            acked.update(_sig(m) for m, _ in pending)
            return self._refused_changes(plan, records, refused)
        at = 0
        for view, rs in staged:
            self.store.write_acked(
                view.partition, view.puts, list(view.deletes), rs, offsets[at : at + len(rs)]
            )
            at += len(rs)
            view.puts, view.deletes = {}, {}
        return {}

    async def _produce(
        self, pending: list[tuple[Outgoing, int | None]], acked: set[_Sig]
    ) -> dict[int, Rejection]:
        """Produce messages (each with the input it is for) until Kafka has them all;
        the inputs whose output it refused for good (the rest go to ``acked`` then).
        A refused message with no input to blame (a deadline's, or a dead letter
        itself) is replaced by a headers-only record in ``dlq``."""
        while pending:
            _, refused = await self._send([m for m, _ in pending])
            rejected: dict[int, Rejection] = {}
            notes: list[tuple[Outgoing, int | None]] = []
            for i, reason in sorted(refused.items()):
                m, origin = pending[i]
                size = len(m.value or b"")
                why = f"Kafka refused its message to {m.topic} ({size} bytes) for good: {reason}"
                if origin is not None and m.topic != self.topics.dlq:
                    rejected.setdefault(origin, (ErrorCode.KAFKA_PRODUCE_FAILED, why))
                elif any(k == _REFUSED for k, _ in m.headers or ()):
                    log.error("dropped a message Kafka refused, and its note too: %s", why)
                else:
                    log.error("a message Kafka refused goes to the DLQ as a note: %s", why)
                    notes.append((self._refused_note(m, why), None))
            if rejected:
                acked.update(_sig(m) for i, (m, _) in enumerate(pending) if i not in refused)
                return rejected
            pending = notes
        return {}

    async def _send(self, messages: list[Outgoing]) -> tuple[list[int], dict[int, str]]:
        """Produce ``messages``, retrying what may pass; their offsets, and those Kafka
        refused for good (by index, with the reason; their offsets are -1).

        A broker refuses a whole record batch for one oversize message, so each
        refused message is sent once more alone: only those refused again count.
        """
        try:
            return await self._until_sent(messages), {}
        except MessageRefused as exc:
            offsets, suspects = list(exc.offsets), exc.refused
        refused: dict[int, str] = {}
        for i in sorted(suspects):
            try:
                offsets[i] = (await self._until_sent([messages[i]]))[0]
            except MessageRefused as again:
                refused[i] = again.refused[0]
        return offsets, refused

    def _refused_changes(
        self, plan: _Round, records: list[Outgoing], refused: dict[int, str]
    ) -> dict[int, Rejection]:
        """The inputs that wrote the changelog records Kafka refused for good."""
        rejected: dict[int, Rejection] = {}
        for j, reason in sorted(refused.items()):
            r = records[j]
            assert r.partition is not None and isinstance(r.key, bytes)
            writer = plan.writers.get((r.partition, r.key))
            why = (
                f"Kafka refused the state change it makes ({len(r.value or b'')} bytes to "
                f"{r.topic}) for good: {reason}"
            )
            if writer is None:
                raise HeadraceError(ErrorCode.KAFKA_PRODUCE_FAILED, why, retryable=False)
            rejected.setdefault(writer, (ErrorCode.KAFKA_PRODUCE_FAILED, why))
        return rejected

    async def _until_sent(self, messages: list[Outgoing] | None) -> list[int]:
        """Produce ``messages`` (none: only changelog records queued by ``store.write``);
        retry until all are acknowledged; their offsets. Raises :class:`MessageRefused`
        if Kafka refused some for good, and any error that no retry can fix."""
        while True:
            try:
                offsets = await self._producer().send(messages) if messages else []
                await self.store.flush(self._producer())
                return offsets
            except HeadraceError as exc:
                if not exc.retryable:
                    raise
                # Sent again as a whole: a duplicate beats a loss, and all are idempotent.
                log.warning("producing failed, retrying in 1 s: %s", exc.message)
                await asyncio.sleep(1.0)

    def _note_deadlines(self, earliest: int) -> None:
        """Wake the deadline loop if a batch set a deadline (``earliest``) before its next round."""
        if earliest < self.next_round:
            self.wake.set()

    def _reject(self, msg: Any, why: Rejection) -> None:
        metrics.REJECTED.labels(msg.topic).inc()
        log.warning(
            "unprocessable message dead-lettered: %s",
            why[1],
            extra={
                "topic": msg.topic,
                "partition": msg.partition,
                "offset": msg.offset,
                "code": why[0].code,
                "reason": why[1],
            },
        )

    def _dead_letter(self, msg: Any, code: ErrorCode, reason: str) -> Outgoing:
        """The ``dlq`` record of input ``msg``: its key and value, the reason in headers."""
        headers = [
            ("headrace-error-code", code.code.encode()),
            ("headrace-error", reason.encode()[:4000]),
            ("headrace-source-topic", str(msg.topic).encode()),
            ("headrace-source-partition", str(msg.partition).encode()),
            ("headrace-source-offset", str(msg.offset).encode()),
            ("headrace-service", b"tasks"),
        ]
        return Outgoing(self.topics.dlq, msg.value, msg.key, None, headers)

    def _refused_note(self, m: Outgoing, why: str) -> Outgoing:
        """A headers-only ``dlq`` record for a message Kafka refused (its own headers kept)."""
        mine = {"headrace-error-code", "headrace-error", "headrace-service", _REFUSED}
        headers = [
            ("headrace-error-code", ErrorCode.KAFKA_PRODUCE_FAILED.code.encode()),
            ("headrace-error", why.encode()[:4000]),
            (_REFUSED, m.topic.encode()),
            ("headrace-service", b"tasks"),
            *[(k, v) for k, v in m.headers or () if k not in mine],
        ]
        return Outgoing(self.topics.dlq, None, m.key, None, headers)

    # -- deadlines ---------------------------------------------------------------

    async def _deadline_loop(self) -> None:
        while True:
            try:
                delay = await self.deadline_round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("deadline round failed; retrying in 1 s")
                delay = 1.0
            self.next_round = now_ms() + int(delay * 1000)
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), delay)
            else:
                await asyncio.sleep(0)
            self.wake.clear()

    async def deadline_round(self) -> float:
        """Act on every deadline that is due; returns how long to sleep before the next round."""
        async with self.lock:
            now = now_ms()
            sleep = self.config.idle_tick
            out = Outbox()
            views: list[View] = []
            for p in sorted(self.active):
                start, stop = due_range(now)
                due = list(self.store.scan(p, start, stop, self.config.deadline_batch))
                if due:
                    view = View(self.store, p)
                    for key, _ in due:
                        at, task_id = split_due_key(key)
                        self.lifecycle.deadline(view, task_id, at, now, out)
                    views.append(view)
                if len(due) >= self.config.deadline_batch:
                    sleep = 0.0
                    continue
                for key, _ in self.store.scan(p, *due_after(now + 1), 1):
                    sleep = min(sleep, max(0.0, (split_due_key(key)[0] - now_ms()) / 1000))
            if views:
                for queue in sorted(out.queues - self.known_queues):
                    why = await self._ensure_queue(queue)
                    if why is not None:
                        raise HeadraceError(*why)
                plan = _Round(views={v.partition: v for v in views})
                plan.add(self._messages(out), None)
                earliest = plan.earliest_due()
                await self._commit(plan, set())
                if earliest < _NEVER:  # a deadline this round set (a purge, say)
                    sleep = min(sleep, max(0.0, (earliest - now_ms()) / 1000))
            return sleep

    # -- running -------------------------------------------------------------------

    def run(self) -> None:
        from headrace.streams.runner import run_worker

        self.start_clients()
        try:
            run_worker(self.app, self.settings, "tasks")
        finally:
            if self.producer is not None:
                self.producer.close()
