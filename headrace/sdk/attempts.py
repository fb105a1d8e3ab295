"""Run task attempts on the worker's event loop: start, heartbeat, finish, report.

The fetchers hand dispatches over (:meth:`Attempts.deliver`, from their
threads); here each becomes an asyncio task that sends ``started``, runs the
handler (async on the loop, sync in the thread pool), heartbeats while it
runs, and reports exactly one ``completed`` or ``failed``. When Kafka
acknowledges that report, the dispatch's offset is released for commit — and
of any duplicate delivery of the same attempt that arrived meanwhile, which
joins the running attempt instead of running again.

A report Kafka refuses for good never holds its partition back: one too large
for a Kafka message becomes a small non-retryable ``worker.output_too_large``
failure, and any other permanent refusal releases the dispatch unanswered (the
task service's timeout then retries the task).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import KafkaError, Message

from headrace.core.task_codec import (
    DispatchKind,
    TaskDispatch,
    TaskResult,
    completed,
    encode_result,
    failed,
    heartbeat,
    started,
)
from headrace.errors import ErrorCode, HeadraceError
from headrace.sdk import metrics
from headrace.sdk.context import TaskContext
from headrace.sdk.errors import Failure, Retryable, failure_of
from headrace.sdk.fetcher import Fetched
from headrace.sdk.handlers import Handler, Handlers
from headrace.sdk.offsets import PartitionOffsets
from headrace.sdk.results import ResultSender, too_large
from headrace.sdk.slots import Slots
from headrace.settings import Settings

log = logging.getLogger("headrace.sdk.worker")

_RECENT = 10_000  # answered attempts remembered, to skip redelivered dispatches
OUTPUT_TOO_LARGE = "worker.output_too_large"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Running:
    """One attempt being worked on, and any duplicate deliveries of it."""

    __slots__ = ("ctx", "extra", "fetched", "task")

    def __init__(self, fetched: Fetched, ctx: TaskContext) -> None:
        self.fetched = fetched
        self.ctx = ctx
        self.extra: list[Fetched] = []
        self.task: asyncio.Task[None] | None = None


class Attempts:
    """The attempts of one serving worker (created by :meth:`Worker.serve`)."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        settings: Settings,
        queues: list[str],
        handlers: Handlers,
        sender: ResultSender,
        pool: ThreadPoolExecutor,
        slots: Slots,
        identity: str,
        heartbeat_fraction: float,
        unhandled_code: str,
        unhandled_retryable: bool,
    ) -> None:
        self._loop = loop
        self.settings = settings
        self.queues = queues
        self.handlers = handlers
        self._sender = sender
        self._pool = pool
        self._slots = slots
        self.identity = identity
        self.heartbeat_fraction = heartbeat_fraction
        self.unhandled_code = unhandled_code
        self.unhandled_retryable = unhandled_retryable
        self._running: dict[tuple[str, int], _Running] = {}
        self._recent: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._recent_lock = threading.Lock()

    def unfinished(self) -> list[asyncio.Task[None]]:
        """Handler tasks still running (for the drain)."""
        return [r.task for r in self._running.values() if r.task is not None and not r.task.done()]

    # -- from the fetchers ---------------------------------------------------------

    def deliver(self, batch: list[Fetched]) -> None:
        """Fetcher thread → loop: start these attempts."""
        self._loop.call_soon_threadsafe(self._accept, batch)

    def dead_letter(self, msg: Message, reason: str, offsets: PartitionOffsets) -> None:
        offset = msg.offset() or 0
        topic = msg.topic() or ""
        queue = next(
            (q for q in self.queues if topic.startswith(self.settings.topics.tasks(q))), ""
        )
        metrics.DEAD_LETTERED.labels(queue).inc()
        log.error(
            "undecodable dispatch %s[%d]@%d sent to the dlq topic: %s",
            msg.topic(),
            msg.partition(),
            offset,
            reason,
        )
        headers = [
            *[(str(k), v) for k, v in list(msg.headers() or []) if isinstance(v, bytes)],
            ("headrace-error-code", ErrorCode.DECODE_FAILED.code.encode()),
            ("headrace-error", reason.encode()[:4000]),
            ("headrace-source-topic", topic.encode()),
            ("headrace-source-partition", str(msg.partition()).encode()),
            ("headrace-source-offset", str(offset).encode()),
            ("headrace-service", b"worker"),
        ]

        def refused(err: KafkaError) -> None:
            # Holding the offset would stop the partition's commits for good.
            log.error(
                "Kafka refused the dead letter of %s[%d]@%d for good (%s); skipping the record",
                topic,
                msg.partition(),
                offset,
                err.str(),
            )
            offsets.finish(offset)

        self._sender.send(
            self.settings.topics.dlq,
            msg.value(),
            msg.key(),
            None,
            headers=headers,
            acked=lambda: offsets.finish(offset),
            refused=refused,
            what=f"dead letter of {topic}@{offset}",
        )

    # -- on the loop ---------------------------------------------------------------

    def _accept(self, batch: list[Fetched]) -> None:
        for f in batch:
            d = f.dispatch
            key = (d.task_id, d.attempt)
            running = self._running.get(key)
            if d.kind is DispatchKind.CANCEL:
                if running is not None:
                    running.ctx.cancel()
                    if running.task is not None and self._handler_is_async(d):
                        running.task.cancel()
                f.finish()
                continue
            if running is not None or self._answered(key):
                metrics.DUPLICATES.labels(d.queue).inc()
                self._slots.give(1)
                if running is not None:
                    running.extra.append(f)
                else:
                    f.finish()
                continue
            ctx = TaskContext(d, self.identity, _now_ms(), self._beat, self._min_beat_gap(d))
            run = _Running(f, ctx)
            self._running[key] = run
            run.task = self._loop.create_task(self._execute(run))

    def _handler_is_async(self, d: TaskDispatch) -> bool:
        handler = self.handlers.find(d)
        return handler is not None and handler.is_async

    async def _execute(self, run: _Running) -> None:
        d, ctx = run.fetched.dispatch, run.ctx
        sender = self._sender
        metrics.IN_FLIGHT.inc()
        t0 = time.perf_counter()
        beat_timer: list[asyncio.TimerHandle] = []
        try:
            sender.report(d, started(d, self.identity, ctx.started_ms))
            if d.heartbeat_ms:
                self._arm_heartbeats(ctx, beat_timer)
            result = await self._call(self.handlers.find(d), d, ctx)
        finally:
            if beat_timer:
                beat_timer[0].cancel()
            metrics.IN_FLIGHT.dec()
            metrics.of_queue(d.queue).seconds.observe(time.perf_counter() - t0)
            self._slots.give(1)
        try:
            self._report_final(run, result)
        except Exception:
            # Unanswered but released: a stuck dispatch would stop its partition's commits.
            log.exception("the final report of task %s could not be sent", d.task_id)
            self._release(run)

    async def _call(self, handler: Handler | None, d: TaskDispatch, ctx: TaskContext) -> TaskResult:
        try:
            if handler is None:
                raise Retryable(
                    "worker.unknown_task",
                    f"worker {self.identity} on queue {d.queue} has no handler for step "
                    f"{d.step!r} of {d.workflow_type}"
                    + (f" (config.task {d.config['task']!r})" if "task" in d.config else "")
                    + f"; it handles {', '.join(self.handlers.names())} — deploy a worker that "
                    "handles it, then retry or redrive the task",
                )
            if handler.is_async:
                out = await (
                    handler.fn(d.input, ctx) if handler.takes_context else handler.fn(d.input)
                )
            else:
                call = (
                    functools.partial(handler.fn, d.input, ctx)
                    if handler.takes_context
                    else functools.partial(handler.fn, d.input)
                )
                out = await self._loop.run_in_executor(self._pool, call)
            return completed(d, self.identity, _now_ms(), out)
        except asyncio.CancelledError:
            if not ctx.cancelled:
                raise
            return self._failed(
                d, Failure("task.cancelled", "the task service cancelled this attempt", False)
            )
        except Exception as exc:
            failure = failure_of(exc, self.unhandled_code)
            if failure.code == self.unhandled_code and not self.unhandled_retryable:
                failure = Failure(failure.code, failure.message, False, failure.details)
            if failure.code == self.unhandled_code:
                log.warning(
                    "handler for %s (task %s attempt %d) raised %s",
                    d.step,
                    d.task_id,
                    d.attempt,
                    failure.message,
                    exc_info=exc,
                )
            return self._failed(d, failure)

    def _failed(self, d: TaskDispatch, f: Failure) -> TaskResult:
        return failed(
            d,
            self.identity,
            _now_ms(),
            f.code,
            f.message,
            retryable=f.retryable,
            details=f.details or None,
        )

    def _report_final(self, run: _Running, result: TaskResult) -> None:
        d = run.fetched.dispatch
        try:
            value = encode_result(result)
        except HeadraceError as exc:
            result = self._failed(
                d,
                Failure(
                    "worker.output_invalid",
                    f"handler for {d.step!r} returned a result that is not plain JSON: "
                    + exc.message,
                    False,
                ),
            )
            value = encode_result(result)
        self._send_final(run, result, value)

    def _send_final(self, run: _Running, result: TaskResult, value: bytes) -> None:
        d = run.fetched.dispatch
        loop = self._loop
        size = len(value)

        def acked() -> None:  # on the producer's thread
            loop.call_soon_threadsafe(self._acked, run, result)

        def refused(err: KafkaError) -> None:  # on the producer's thread, or this one
            loop.call_soon_threadsafe(self._refused, run, result, size, err)

        self._sender.send(
            d.result_topic,
            value,
            d.result_key,
            d.result_partition,
            acked=acked,
            refused=refused,
            what=f"{result.kind.value} of task {d.task_id}",
        )

    def _refused(self, run: _Running, result: TaskResult, size: int, err: KafkaError) -> None:
        """Kafka will never take this final report: send a small failure instead, or give up."""
        d = run.fetched.dispatch
        if too_large(err) and (result.error is None or result.error.code != OUTPUT_TOO_LARGE):
            limit = self._sender.max_message_bytes
            by = (
                f"the worker's limit of {limit} bytes"
                if size > limit
                else "the topic's max.message.bytes on the broker"
            )
            log.warning(
                "the %s of task %s is %d bytes, over %s; reporting %s instead",
                result.kind.value,
                d.task_id,
                size,
                by,
                OUTPUT_TOO_LARGE,
            )
            small = self._failed(
                d,
                Failure(
                    OUTPUT_TOO_LARGE,
                    f"the {result.kind.value} report of step {d.step!r} is {size} bytes (its "
                    f"output or error details); a Kafka message holds at most {limit} bytes "
                    f"here ({by} refused it) — return less, e.g. store the data elsewhere and "
                    "return a reference to it",
                    False,
                    {"size_bytes": size, "limit_bytes": limit},
                ),
            )
            self._send_final(run, small, encode_result(small))
            return
        log.error(
            "Kafka refused the %s of task %s attempt %d for good (%s); releasing its dispatch "
            "unanswered — the task service's timeout retries the task",
            result.kind.value,
            d.task_id,
            d.attempt,
            err.str(),
        )
        self._release(run)

    def _acked(self, run: _Running, result: TaskResult) -> None:
        """The final report is on Kafka: count it, release the attempt."""
        d = run.fetched.dispatch
        if result.error is None:
            metrics.of_queue(d.queue).completed.inc()
        else:
            m = metrics.of_queue(d.queue)
            (m.cancelled if result.error.code == "task.cancelled" else m.failed).inc()
            metrics.FAILURES.labels(
                d.queue, result.error.code, str(result.error.retryable).lower()
            ).inc()
        self._release(run)

    def _release(self, run: _Running) -> None:
        """The attempt is over: release the offsets of every delivery of it."""
        d = run.fetched.dispatch
        key = (d.task_id, d.attempt)
        with self._recent_lock:
            self._recent[key] = None
            if len(self._recent) > _RECENT:
                self._recent.popitem(last=False)
        self._running.pop(key, None)
        run.fetched.finish()
        for f in run.extra:
            f.finish()

    def _answered(self, key: tuple[str, int]) -> bool:
        with self._recent_lock:
            return key in self._recent

    # -- heartbeats ----------------------------------------------------------------

    def _min_beat_gap(self, d: TaskDispatch) -> int:
        if d.heartbeat_ms:
            return int(d.heartbeat_ms * self.heartbeat_fraction / 4)
        return 1000

    def _beat(self, ctx: TaskContext, progress: Any) -> None:
        d = ctx.dispatch
        self._sender.report(d, heartbeat(d, self.identity, _now_ms(), progress))

    def _arm_heartbeats(self, ctx: TaskContext, handle: list[asyncio.TimerHandle]) -> None:
        assert ctx.dispatch.heartbeat_ms
        interval_ms = max(10, int(ctx.dispatch.heartbeat_ms * self.heartbeat_fraction))
        loop = self._loop

        def tick() -> None:
            now = _now_ms()
            due = ctx.last_beat_ms + interval_ms
            if now >= due:
                try:
                    ctx.auto_beat(now)
                except HeadraceError as exc:
                    log.error("heartbeat of task %s not sent: %s", ctx.task_id, exc)
                due = now + interval_ms
            handle[0] = loop.call_later((due - now) / 1000.0, tick)

        handle.append(loop.call_later(interval_ms / 1000.0, tick))
