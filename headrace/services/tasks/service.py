"""The task service: a faust worker over ``task-requests`` and ``task-results``.

One agent (concurrency 1) takes both topics in batches (``take_events``).
They are co-partitioned with ``commands``: the orchestrator writes a run's
requests to the run's partition, and every dispatch names that partition as
``result_partition``, so a worker's results come back to the worker that
holds the task. Per batch:

1. apply each request or result to its partition's records through a
   :class:`~headrace.services.tasks.lifecycle.View` (nothing written yet);
2. create the topics of queues seen for the first time (``tasks.<queue>``,
   its priority bands and its DLQ — idempotent);
3. produce the batch's dispatches, commands (``TaskStarted``, ``CompleteTask``,
   ``FailTask``) and DLQ records, and wait for every acknowledgement;
4. produce the changelog records of its state changes and wait; then write
   the changes to RocksDB (one write per partition), and faust may
   acknowledge the batch.

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
from typing import Any

from headrace.core.outbox import Outgoing, command_message
from headrace.core.task_codec import decode_result, encode_dispatch
from headrace.errors import ErrorCode, HeadraceError
from headrace.services.tasks import metrics
from headrace.services.tasks.config import TaskSettings
from headrace.services.tasks.lifecycle import Lifecycle, Outbox, View
from headrace.services.tasks.records import DUE, due_after, due_range, split_due_key
from headrace.settings import Settings
from headrace.streams.app import make_app
from headrace.streams.batched_store import BatchedChangelogStore
from headrace.streams.producer import AsyncProducer
from headrace.topic_admin import ensure_task_topics

log = logging.getLogger("headrace.tasks")

TABLE = "tasks"
_NEVER = 2**62


def now_ms() -> int:
    return int(time.time() * 1000)


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
        self.source = self.app.topic(
            self.topics.task_requests,
            self.topics.task_results,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
        )
        # bytes key and value types make faust use the raw serializers.
        self.table = self.app.Table(
            TABLE, key_type=bytes, value_type=bytes, partitions=settings.partitions
        )
        self.store = BatchedChangelogStore(self.table)
        self.lifecycle = Lifecycle(self.topics, int(self.config.retain_finished * 1000))
        self.producer: AsyncProducer | None = None
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
        """Apply a batch of requests and results; produce what they cause; then commit."""
        started = time.perf_counter()
        async with self.lock:
            views: dict[int, View] = {}
            out = Outbox()
            poison: list[Outgoing] = []
            now = now_ms()
            for ev in events:
                msg = ev.message
                p: int = msg.partition
                view = views.get(p)
                if view is None:
                    view = views[p] = View(self.store, p)
                try:
                    self._apply(view, msg, now, out)
                except (HeadraceError, ValueError, KeyError, TypeError) as exc:
                    poison.append(self._dead_letter(msg, exc))
            if not views:
                return
            await self._commit(out, poison, list(views.values()))
            for view in views.values():
                self._note_deadlines(view)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)

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
            kind = op.get("op")
            if kind == "schedule":
                self.lifecycle.schedule(view, op, now, out)
            elif kind == "cancel":
                self.lifecycle.cancel(view, op, now, out)
            else:
                raise ValueError(f"unknown task request op {kind!r} (expected schedule or cancel)")

    async def _commit(self, out: Outbox, also: list[Outgoing], views: list[View]) -> None:
        """Produce ``out`` (and ``also``); once Kafka has acknowledged them, the views'
        changelog records; once those are acknowledged too, write the views to RocksDB.

        Two round trips, not one: a batch is not atomic across partitions, and a
        worker killed with the changelog records acknowledged but a dispatch or a
        command still in its buffer would come back with the task recorded as
        dispatched (or completed) and nothing to show for it downstream.
        """
        new = out.queues - self.known_queues
        if new:
            loop = asyncio.get_running_loop()
            for queue in sorted(new):
                await loop.run_in_executor(None, ensure_task_topics, self.settings, queue)
                self.known_queues.add(queue)
        messages = [command_message(c, self.routing) for c in out.commands]
        for topic, d in zip(out.dispatch_topics, out.dispatches, strict=True):
            headers = [("headrace-op", d.kind.value.encode())]
            messages.append(Outgoing(topic, encode_dispatch(d), d.task_id, None, headers))
        messages.extend(out.dlq)
        messages.extend(also)
        staged = [
            (v, self.store.changelog_records(v.partition, v.puts, list(v.deletes)))
            for v in views
            if v.puts or v.deletes
        ]
        records = [r for _, rs in staged for r in rs]
        if messages:
            await self._until_sent(messages)
        if not records:
            return
        offsets = await self._until_sent(records)
        at = 0
        for view, rs in staged:
            self.store.write_acked(
                view.partition, view.puts, list(view.deletes), rs, offsets[at : at + len(rs)]
            )
            at += len(rs)
            view.puts, view.deletes = {}, {}

    async def _until_sent(self, messages: list[Outgoing] | None) -> list[int]:
        """Produce ``messages`` (none: only changelog records queued by ``store.write``);
        retry until all are acknowledged; their offsets."""
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

    def _note_deadlines(self, view: View) -> None:
        """Wake the deadline loop if this batch set a deadline before its next round."""
        earliest = min((split_due_key(k)[0] for k in view.puts if k[:1] == DUE), default=_NEVER)
        if earliest < self.next_round:
            self.wake.set()

    def _dead_letter(self, msg: Any, exc: Exception) -> Outgoing:
        code = exc.code if isinstance(exc, HeadraceError) else ErrorCode.DECODE_FAILED
        reason = exc.message if isinstance(exc, HeadraceError) else f"{type(exc).__name__}: {exc}"
        metrics.REJECTED.labels(msg.topic).inc()
        log.warning(
            "unreadable message dead-lettered",
            extra={
                "topic": msg.topic,
                "partition": msg.partition,
                "offset": msg.offset,
                "reason": reason,
            },
        )
        headers = [
            ("headrace-error-code", code.code.encode()),
            ("headrace-error", reason.encode()[:4000]),
            ("headrace-source-topic", str(msg.topic).encode()),
            ("headrace-source-partition", str(msg.partition).encode()),
            ("headrace-source-offset", str(msg.offset).encode()),
            ("headrace-service", b"tasks"),
        ]
        return Outgoing(self.topics.dlq, msg.value, msg.key, None, headers)

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
                await self._commit(out, [], views)
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
