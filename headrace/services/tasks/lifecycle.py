"""A task attempt's lifecycle: what each request, result and deadline changes and sends.

The functions here are the task service's decisions, free of Kafka: each
reads and writes one partition's records through a :class:`View` (the
batch's writes overlaid on the store, so that later messages of a batch see
earlier ones) and appends what must be produced to an :class:`Outbox`. The
service produces the outbox, waits for Kafka's acknowledgements, and only
then commits the view: a crash in between redoes the batch from its inputs,
which is safe because everything produced is idempotent downstream (commands
address one attempt; dispatches and DLQ entries carry stable ids).

Retries are the run's decision (the decider's); this module only asks the
same question — is this failure the step's last? — to know when a task goes
to its queue's DLQ (:func:`headrace.core.decider.tasks.final_failure`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from headrace.core.decider.tasks import EXHAUSTED, final_failure
from headrace.core.envelope import Command, CommandType
from headrace.core.outbox import Outgoing
from headrace.core.task_codec import DispatchKind, ResultKind, TaskDispatch, TaskResult
from headrace.services.tasks import dlq, metrics
from headrace.services.tasks.records import (
    CANCELLED,
    COMPLETED,
    DISPATCHED,
    FAILED,
    PURGE,
    STARTED,
    TIMED_OUT,
    History,
    TaskRecord,
    due_key,
    history_key,
    task_key,
)
from headrace.topology import Topics

log = logging.getLogger("headrace.tasks")


class Store(Protocol):
    """What a view needs of a partition-addressed store (``PartitionStore``)."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...

    def write(
        self,
        partition: int,
        puts: Mapping[bytes, bytes] | None = None,
        deletes: list[bytes] | tuple[bytes, ...] = (),
    ) -> None: ...


class View:
    """One partition's records, with a batch's writes overlaid until :meth:`commit`.

    A view over another view (:meth:`scratch`) collects one message's writes on
    top of the batch's; :meth:`merge` takes them into the batch once the whole
    message went through, so a message that fails half-way leaves nothing.
    """

    def __init__(self, store: Store, partition: int, parent: View | None = None) -> None:
        self.store = store
        self.partition = partition
        self.parent = parent
        self.puts: dict[bytes, bytes] = {}
        self.deletes: dict[bytes, None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self.puts:
            return self.puts[key]
        if key in self.deletes:
            return None
        if self.parent is not None:
            return self.parent.get(key)
        return self.store.get(self.partition, key)

    def put(self, key: bytes, value: bytes) -> None:
        self.deletes.pop(key, None)
        self.puts[key] = value

    def delete(self, key: bytes) -> None:
        self.puts.pop(key, None)
        self.deletes[key] = None

    def scratch(self) -> View:
        """An empty overlay on this view, for one message's writes."""
        return View(self.store, self.partition, self)

    def merge(self, child: View) -> None:
        """Take the writes of ``child`` (an overlay from :meth:`scratch`) into this view."""
        for key in child.deletes:
            self.delete(key)
        for key, value in child.puts.items():
            self.put(key, value)

    def task(self, task_id: str) -> TaskRecord | None:
        raw = self.get(task_key(task_id))
        return None if raw is None else TaskRecord.from_bytes(raw)

    def history(self, key: bytes) -> History:
        """The step visit's history at ``key`` (:func:`history_key`; empty if none)."""
        raw = self.get(key)
        return History() if raw is None else History.from_bytes(raw)

    def commit(self) -> None:
        self.store.write(self.partition, self.puts, list(self.deletes))
        self.puts, self.deletes = {}, {}


@dataclass(slots=True)
class Outbox:
    """What a batch must produce before its changes are committed."""

    commands: list[Command] = field(default_factory=list)
    dispatches: list[TaskDispatch] = field(default_factory=list)
    dispatch_topics: list[str] = field(default_factory=list)
    dlq: list[Outgoing] = field(default_factory=list)
    queues: set[str] = field(default_factory=set)  # whose topics the messages go to

    def dispatch(self, topic: str, d: TaskDispatch) -> None:
        self.dispatch_topics.append(topic)
        self.dispatches.append(d)
        self.queues.add(d.queue)

    def dead_letter(self, queue: str, message: Outgoing) -> None:
        self.dlq.append(message)
        self.queues.add(queue)

    def __bool__(self) -> bool:
        return bool(self.commands or self.dispatches or self.dlq)


class Lifecycle:
    """The transitions, for one service's topics and retention."""

    def __init__(self, topics: Topics, retain_ms: int) -> None:
        self.topics = topics
        self.retain_ms = retain_ms

    # -- task-requests -----------------------------------------------------------

    def schedule(self, view: View, req: dict[str, Any], now: int, out: Outbox) -> None:
        """Dispatch a new attempt; a request for a known task id is a replay and changes nothing."""
        task_id = req["task_id"]
        if view.get(task_key(task_id)) is not None:
            metrics.DUPLICATE_REQUESTS.labels("schedule").inc()
            return
        key = req["idempotency_key"]
        queue = req["queue"]
        hkey = history_key(req["tenant"], req["run_id"], req["step"], key)
        history = view.history(hkey)
        if history.parked is not None:
            # The run redrove the parked task: this is attempt 1 of a fresh budget.
            redriven = dlq.status(self.topics, queue, history.parked, dlq.REDRIVEN, now)
            out.dead_letter(queue, redriven)
            self._unpark(view, history.parked)
            history.parked = None
            view.put(hkey, history.to_bytes())
        priority = int(req.get("priority", 5))
        rec = TaskRecord(
            task_id=task_id,
            attempt=int(req["attempt"]),
            state=DISPATCHED,
            queue=queue,
            topic=self.topics.tasks_band(queue, priority),
            tenant=req["tenant"],
            run_id=req["run_id"],
            workflow_type=req.get("workflow_type") or "",
            step=req["step"],
            idempotency_key=key,
            priority=priority,
            input=req.get("input"),
            config=dict(req.get("config") or {}),
            timeouts=dict(req.get("timeouts") or {}),
            retry=dict(req.get("retry") or {}),
            partition=view.partition,
            dispatched_at=now,
            traceparent=req.get("traceparent"),
        )
        self._save(view, rec)
        out.dispatch(rec.topic, self._dispatch(rec, DispatchKind.DISPATCH))
        metrics.DISPATCHED.labels(queue).inc()

    def cancel(self, view: View, req: dict[str, Any], now: int, out: Outbox) -> None:
        """The run stopped waiting for the attempt: end it, tell its worker, close its history."""
        rec = view.task(req["task_id"])
        if rec is None:
            return
        if rec.live:
            rec.state = CANCELLED
            rec.ended_at = now
            self._save(view, rec)
            out.dispatch(rec.topic, self._dispatch(rec, DispatchKind.CANCEL))
            metrics.CANCELLED.inc()
        elif rec.parked:
            closed = dlq.status(self.topics, rec.queue, rec.task_id, dlq.CLOSED, now)
            out.dead_letter(rec.queue, closed)
            self._unpark(view, rec.task_id)
        else:
            metrics.DUPLICATE_REQUESTS.labels("cancel").inc()
            return
        view.delete(rec.history_key)

    # -- task-results --------------------------------------------------------------

    def result(self, view: View, r: TaskResult, now: int, out: Outbox) -> str | None:
        """Apply a worker's result; returns why it was ignored (``None``: applied)."""
        rec = view.task(r.task_id)
        reason = _stale(rec, r)
        if reason is not None or rec is None:
            metrics.STALE.labels(r.kind.value, reason).inc()
            return reason
        metrics.RESULTS.labels(r.kind.value).inc()
        match r.kind:
            case ResultKind.STARTED:
                self._started(view, rec, r, now, out)
            case ResultKind.HEARTBEAT:
                if rec.state == DISPATCHED:
                    self._started(view, rec, r, now, out)
                rec.heartbeat_at = now
                if r.progress is not None:
                    rec.progress = r.progress
                self._save(view, rec)
            case ResultKind.COMPLETED:
                payload = {"task_id": rec.task_id, "attempt": rec.attempt, "result": r.output}
                out.commands.append(_command(rec, CommandType.CompleteTask, payload, now))
                self._end(view, rec, COMPLETED, now, r.worker)
                view.delete(rec.history_key)
            case ResultKind.FAILED:
                assert r.error is not None  # decode_result checks it
                err = r.error.to_json()
                payload = {"task_id": rec.task_id, "attempt": rec.attempt, "error": err}
                out.commands.append(_command(rec, CommandType.FailTask, payload, now))
                rec.error = err
                self._end(view, rec, FAILED, now, r.worker)
                self._after_failure(view, rec, err["code"], r.error.retryable, now, out)
        return None

    def _started(self, view: View, rec: TaskRecord, r: TaskResult, now: int, out: Outbox) -> None:
        if rec.state == STARTED:
            if r.worker != rec.worker:
                # The dispatch was delivered again (its first worker died before it
                # committed, or a rebalance): the lease stays with the first worker.
                metrics.DUPLICATE_STARTS.inc()
                log.info(
                    "task %s attempt %d: %s also started it (lease stays with %s)",
                    rec.task_id,
                    rec.attempt,
                    r.worker,
                    rec.worker,
                )
            return
        rec.state = STARTED
        rec.worker = r.worker
        rec.started_at = rec.heartbeat_at = now
        self._save(view, rec)
        payload = {"task_id": rec.task_id, "attempt": rec.attempt, "worker": r.worker}
        out.commands.append(_command(rec, CommandType.TaskStarted, payload, now))

    # -- deadlines -----------------------------------------------------------------

    def deadline(self, view: View, task_id: str, due: int, now: int, out: Outbox) -> bool:
        """Act on the deadline ``due`` of ``task_id``; False if it no longer applies."""
        rec = view.task(task_id)
        if rec is None or rec.deadline != due:
            view.delete(due_key(due, task_id))  # an index entry without its record
            return False
        if rec.deadline_kind == PURGE:
            view.delete(due_key(due, task_id))
            view.delete(task_key(task_id))
            return True
        kind = rec.deadline_kind or ""
        payload = {"task_id": rec.task_id, "attempt": rec.attempt, "timeout": kind}
        out.commands.append(_command(rec, CommandType.TimeoutTask, payload, now, kind))
        rec.timeout = kind
        self._end(view, rec, TIMED_OUT, now, None)
        metrics.TIMEOUTS.labels(kind).inc()
        metrics.LATE.observe(max(0, now - due) / 1000)
        self._after_failure(view, rec, "timeout", None, now, out)
        return True

    # -- shared --------------------------------------------------------------------

    def _end(self, view: View, rec: TaskRecord, state: str, now: int, worker: str | None) -> None:
        rec.state = state
        rec.ended_at = now
        if rec.worker is None and worker is not None:
            rec.worker = worker
        self._save(view, rec)

    def _after_failure(
        self,
        view: View,
        rec: TaskRecord,
        code: str,
        retryable: bool | None,
        now: int,
        out: Outbox,
    ) -> None:
        """Keep the attempt in the step's history; dead-letter the task if it was the last."""
        policy = rec.retry
        final = final_failure(
            policy.get("max_attempts"),
            list(policy.get("non_retryable") or ()),
            rec.attempt,
            code,
            retryable,
        )
        hkey = rec.history_key
        history = view.history(hkey)
        history.attempts.append(rec.summary())
        if final is None:
            view.put(hkey, history.to_bytes())
            return
        parked = final == EXHAUSTED and policy.get("on_exhausted") == "park"
        out.dead_letter(
            rec.queue, dlq.entry(self.topics, rec, history.attempts, final, parked, now)
        )
        metrics.DEAD_LETTERED.labels(rec.queue, final).inc()
        if parked:
            history.parked = rec.task_id
            view.put(hkey, history.to_bytes())
            rec.parked = True
            self._save(view, rec)
        else:
            view.delete(hkey)

    def _unpark(self, view: View, task_id: str) -> None:
        rec = view.task(task_id)
        if rec is not None and rec.parked:
            rec.parked = False
            self._save(view, rec)

    def _save(self, view: View, rec: TaskRecord) -> None:
        """Write ``rec`` and move its entry in the deadline index."""
        if rec.live:
            nxt = rec.next_deadline()
        elif rec.parked:
            nxt = None
        else:
            nxt = ((rec.ended_at or 0) + self.retain_ms, PURGE)
        if rec.deadline is not None and (nxt is None or nxt[0] != rec.deadline):
            view.delete(due_key(rec.deadline, rec.task_id))
        if nxt is None:
            rec.deadline = rec.deadline_kind = None
        else:
            rec.deadline, rec.deadline_kind = nxt
            view.put(due_key(nxt[0], rec.task_id), nxt[1].encode())
        view.put(task_key(rec.task_id), rec.to_bytes())

    def _dispatch(self, rec: TaskRecord, kind: DispatchKind) -> TaskDispatch:
        t = rec.timeouts
        return TaskDispatch(
            task_id=rec.task_id,
            attempt=rec.attempt,
            idempotency_key=rec.idempotency_key,
            queue=rec.queue,
            priority=rec.priority,
            tenant=rec.tenant,
            run_id=rec.run_id,
            workflow_type=rec.workflow_type,
            step=rec.step,
            input=rec.input,
            config=rec.config,
            dispatched_at=rec.dispatched_at,
            result_topic=self.topics.task_results,
            result_key=f"{rec.tenant}/{rec.run_id}",
            result_partition=rec.partition,
            schedule_to_start_ms=t.get("schedule_to_start_ms"),
            start_to_close_ms=t.get("start_to_close_ms"),
            heartbeat_ms=t.get("heartbeat_ms"),
            max_attempts=rec.retry.get("max_attempts"),
            traceparent=rec.traceparent,
            kind=kind,
        )


def _stale(rec: TaskRecord | None, r: TaskResult) -> str | None:
    if rec is None:
        return "unknown"
    if rec.attempt != r.attempt:
        return "attempt"
    if not rec.live:
        return "finished"
    return None


_SUFFIX = {
    CommandType.TaskStarted: "started",
    CommandType.CompleteTask: "completed",
    CommandType.FailTask: "failed",
    CommandType.TimeoutTask: "timeout",
}


def _command(
    rec: TaskRecord, type_: CommandType, payload: dict[str, Any], now: int, detail: str = ""
) -> Command:
    # Stable ids: a batch redone after a crash sends the very same commands.
    suffix = _SUFFIX[type_] + (f".{detail}" if detail else "")
    return Command(
        command_id=f"{rec.task_id}/{suffix}",
        tenant=rec.tenant,
        run_id=rec.run_id,
        type=type_,
        time=now,
        payload=payload,
        traceparent=rec.traceparent,
    )
