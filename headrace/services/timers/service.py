"""The timer service: a faust worker over ``timers`` that keeps durable timers in RocksDB.

* The **arm agent** takes ``timers`` messages in batches (``take_events``),
  validates them (:mod:`.messages`), resolves business time against the named
  calendar, applies them to the partition's wheel (:mod:`.wheel`) and commits
  each partition's changes as one RocksDB write plus changelog records; a
  message it cannot read goes to ``dlq`` with the reason in headers.
* The **fire loop** (:mod:`.firing`) produces the commands of due timers to
  ``commands`` and deletes them once Kafka has acknowledged them.
* The **schedule loop** (:mod:`.scheduler`) starts the runs of cron schedules.

The table ``wheel`` has a changelog and one RocksDB database per partition,
so each partition is its own timer wheel and moves between workers with its
``timers`` partition (and so with the ``commands`` partition it fires into).
A partition is fired only between the end of its recovery
(``on_rebalance_complete``) and its revocation, which waits for a round in
flight to finish.

Unknown calendars. A business-time timer whose calendar does not exist is
resolved as elapsed time (24x7) — it fires, early rather than never — with a
warning in the log and ``headrace_timers_unknown_calendar_total{calendar}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from headrace.core.calendar import add, between
from headrace.core.codec import encode_command
from headrace.core.envelope import Command
from headrace.core.outbox import Outgoing
from headrace.errors import ErrorCode, HeadraceError
from headrace.services.timers import metrics
from headrace.services.timers.calendars import CalendarBook
from headrace.services.timers.config import TimerSettings
from headrace.services.timers.firing import Firer
from headrace.services.timers.messages import TimerOp, due_of, parse_ops
from headrace.services.timers.run_probe import ApiRunProbe
from headrace.services.timers.scheduler import Scheduler, unknown
from headrace.services.timers.schedules import ScheduleBook
from headrace.services.timers.store import WheelStore
from headrace.services.timers.wheel import Frozen, TimerRecord, Wheel, WheelBatch
from headrace.settings import Settings
from headrace.streams.app import bytes_table, make_app, raw_topic
from headrace.streams.batches import run_batches
from headrace.streams.producer import AsyncProducer

log = logging.getLogger("headrace.timers")

TABLE = "wheel"
_WARN_EVERY = 60.0


class TimerService:
    """One timer-service worker. ``run()`` blocks until SIGTERM."""

    def __init__(
        self,
        settings: Settings,
        *,
        instance: str = "0",
        web_port: int | None = None,
        config: TimerSettings | None = None,
    ) -> None:
        self.settings = settings
        self.config = config or TimerSettings()
        self.topics = settings.topics
        self.app = make_app(settings, "timers", instance=instance, web_port=web_port)
        self.source = raw_topic(self.app, settings, self.topics.timers)
        self.table = bytes_table(self.app, settings, TABLE)
        self.store = WheelStore(self.table)
        self.wheel = Wheel(self.store)
        self.calendars = CalendarBook(settings)
        self.schedules = ScheduleBook(settings)
        self.producer: AsyncProducer | None = None
        self.firer = Firer(
            self.wheel, self._producer, self.topics.commands, self.config, self.flush
        )
        self.scheduler = Scheduler(
            settings,
            self.schedules,
            self.store,
            self.firer,
            self._producer,
            self.flush,
            tick=self.config.schedule_tick,
            probe=ApiRunProbe() if self.config.schedule_probe else unknown,
        )
        self._warned: dict[str, float] = {}
        self._caught_up: dict[str, float] = {}
        self.app.agent(self.source, concurrency=1, name="arm")(self._agent)
        self.app.task(self.firer.run)
        self.app.task(self.scheduler.run)
        # faust's Signal.connect is typed for a keyword-only `signal` argument.
        self.app.on_rebalance_complete.connect(self._on_rebalance_complete)  # type: ignore[arg-type]
        self.app.on_partitions_revoked.connect(self._on_partitions_revoked)  # type: ignore[arg-type]

    def _producer(self) -> AsyncProducer:
        assert self.producer is not None, "start_clients() first"
        return self.producer

    async def flush(self, also: list[Outgoing] | None = None) -> None:
        """Send the table's queued changelog records (and ``also``); await them."""
        await self.store.flush(self._producer(), also)

    # -- life cycle ------------------------------------------------------------

    def start_clients(self) -> None:
        """Start the producer and read calendars and schedules (idempotent)."""
        if self.producer is None:
            self.producer = AsyncProducer(self.settings, "headrace-timers")
            self.calendars.start(wait=60.0)
            self.schedules.start(wait=60.0)

    async def _on_rebalance_complete(self, sender: Any = None, **_: Any) -> None:
        """Fire the partitions we own now that their tables are recovered."""
        owned = {
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == self.topics.timers
        }
        for p in owned - self.firer.active:
            self.firer.add(p)
        gone = self.firer.active - owned
        if gone:
            await self.firer.remove(gone)
        log.info("firing partitions", extra={"partitions": sorted(self.firer.active)})

    async def _on_partitions_revoked(self, sender: Any, revoked: Any = None, **_: Any) -> None:
        gone = {tp.partition for tp in revoked or () if tp.topic == self.topics.timers}
        if gone & self.firer.active:
            await self.firer.remove(gone)
        # Changelog records go out before the next owner recovers the partitions.
        await self._flush_until_done()

    # -- arming ------------------------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        await run_batches(
            stream,
            self.process,
            size=self.config.arm_batch,
            within=self.config.arm_within,
            what="timer operations",
        )

    async def process(self, events: Iterable[Any]) -> None:
        """Apply a batch of ``timers`` messages; dead-letter the unreadable ones."""
        batches: dict[int, WheelBatch] = {}
        dead: list[Outgoing] = []
        for ev in events:
            msg = ev.message
            p: int = msg.partition
            try:
                ops = parse_ops(msg.value)
                wb = batches.get(p)
                if wb is None:
                    wb = batches[p] = self.wheel.batch(p)
                for op in ops:
                    self._apply(wb, op)
            except (ValueError, KeyError, TypeError) as exc:
                dead.append(self._dead_letter(msg, ErrorCode.DECODE_FAILED, str(exc)))
        for p, wb in batches.items():
            wb.commit()
            if wb.earliest is not None:
                self.firer.armed(p, wb.earliest)
        # faust acknowledges the batch once this returns: its changelog must be in Kafka.
        await self._flush_until_done(dead)

    async def _flush_until_done(self, also: list[Outgoing] | None = None) -> None:
        while True:
            try:
                await self.flush(also)
                return
            except HeadraceError as exc:
                if not exc.retryable:
                    raise
                # Dead letters are sent again too: a duplicate beats a loss.
                log.warning("changelog flush failed, retrying: %s", exc.message)
                await asyncio.sleep(1.0)

    def _apply(self, wb: WheelBatch, op: TimerOp) -> None:
        match op.op:
            case "arm":
                due, cal = self._due(op)
                assert op.command is not None
                cmd = encode_command(_at(op, due))
                seq = -1 if op.seq is None else op.seq
                outcome = wb.arm(op.timer_id, due, TimerRecord(op.run_key, cmd, seq, cal))
                (metrics.ARMED if outcome == "armed" else metrics.DUPLICATE_ARMS).inc()
            case "cancel":
                if wb.cancel(op.timer_id) == "cancelled":
                    metrics.CANCELLED.inc()
            case "reset":
                due, cal = self._due(op)
                given: TimerRecord | None = None
                if op.command is not None:
                    given = TimerRecord(op.run_key, encode_command(_at(op, due)), -1, cal)
                if wb.reset(op.timer_id, due, op.seq, given) in ("reset", "armed"):
                    metrics.RESET.inc()
            case "freeze":
                assert op.at is not None
                if wb.freeze(op.timer_id, op.at, op.policy, op.seq) == "frozen":
                    metrics.FROZEN.inc()
            case "thaw":
                assert op.at is not None
                if wb.thaw(op.timer_id, op.at, op.seq, self._shift) == "thawed":
                    metrics.THAWED.inc()

    def _due(self, op: TimerOp) -> tuple[int, str]:
        if op.due is not None or op.business is None:
            return due_of(op, None), ""
        name = str(op.business["calendar"])
        cal = self.calendars.get(name)
        if cal is None and self._first_miss(name):
            # A calendar set a moment ago may not have been read yet: catch up once.
            self.calendars.wait_current(10.0)
            cal = self.calendars.get(name)
        if cal is None:
            metrics.UNKNOWN_CALENDAR.labels(name).inc()
            self._warn_unknown(name, op)
        return due_of(op, cal), name

    def _first_miss(self, name: str) -> bool:
        t = time.monotonic()
        if t - self._caught_up.get(name, -_WARN_EVERY) < _WARN_EVERY:
            return False
        self._caught_up[name] = t
        return True

    def _shift(self, frozen: Frozen, at: int) -> int:
        """Policy freeze: the remaining time, counted in business time for business timers."""
        cal = self.calendars.get(frozen.record.calendar) if frozen.record.calendar else None
        if cal is None:
            return at + max(0, frozen.due - frozen.frozen_at)
        return add(cal, at, between(cal, frozen.frozen_at, frozen.due))

    def _warn_unknown(self, name: str, op: TimerOp) -> None:
        t = time.monotonic()
        if t - self._warned.get(name, 0.0) < _WARN_EVERY:
            return
        self._warned[name] = t
        log.warning(
            "business calendar %r does not exist; timer %s of run %s is resolved as elapsed "
            "time (24x7) — create it with `headrace calendar set %s ...`",
            name,
            op.timer_id,
            op.run_key,
            name,
        )

    def _dead_letter(self, msg: Any, code: ErrorCode, reason: str) -> Outgoing:
        metrics.REJECTED.labels(code.code).inc()
        log.warning(
            "timers message dead-lettered",
            extra={"reason": reason, "partition": msg.partition, "offset": msg.offset},
        )
        headers = [
            ("headrace-error-code", code.code.encode()),
            ("headrace-error", f"timers message: {reason}".encode()[:4000]),
            ("headrace-source-topic", self.topics.timers.encode()),
            ("headrace-source-partition", str(msg.partition).encode()),
            ("headrace-source-offset", str(msg.offset).encode()),
            ("headrace-service", b"timers"),
        ]
        return Outgoing(self.topics.dlq, msg.value, msg.key, None, headers)

    # -- running -------------------------------------------------------------------

    def run(self) -> None:
        from headrace.streams.runner import run_worker

        self.start_clients()
        try:
            run_worker(self.app, self.settings, "timers")
        finally:
            if self.producer is not None:
                self.producer.close()
            self.calendars.stop()
            self.schedules.stop()


def _at(op: TimerOp, due: int) -> Command:
    """The op's command with its ``time`` set to the due time (the run's logical time)."""
    c = op.command
    assert c is not None
    # The constructor, not dataclasses.replace: this runs for every timer armed.
    return Command(
        c.command_id,
        c.tenant,
        c.run_id,
        c.type,
        due,
        c.payload,
        c.causation_id,
        c.correlation_id,
        c.traceparent,
    )
