"""The schedule loop: start the runs of cron schedules this worker owns.

Every schedule belongs to one ``timers`` partition (:func:`.schedules.owner`),
so exactly one worker fires it. Its state (:class:`.schedule_plan.ScheduleState`)
lives in the same RocksDB table as that partition's timers, with a changelog,
and moves with the partition. Each tick the loop plans every owned schedule
(:func:`.schedule_plan.plan`), produces the start events, awaits their
acknowledgement and only then records the new state — a crash in between
produces the same events again, which the router collapses by source + id.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from headrace.core.localtime import utc_iso
from headrace.services.timers import metrics
from headrace.services.timers.firing import Firer, now_ms
from headrace.services.timers.schedule_plan import ScheduleState, plan
from headrace.services.timers.schedules import ScheduleBook, ScheduleSpec, owner, start_event
from headrace.services.timers.store import WheelStore
from headrace.settings import Settings
from headrace.streams.producer import AsyncProducer

log = logging.getLogger("headrace.schedules")

STATE = b"s"
SWEEP_SECONDS = 60.0

# Whether a schedule's last run still runs: True, False, or None (cannot tell).
RunProbe = Callable[[ScheduleSpec, str], bool | None]


def unknown(spec: ScheduleSpec, run_id: str) -> bool | None:
    """Nobody can tell (a timer service run without the query API's probe)."""
    return None


def state_key(name: str) -> bytes:
    return STATE + name.encode()


class Scheduler:
    """Fires the schedules of the partitions the :class:`~.firing.Firer` owns."""

    def __init__(
        self,
        settings: Settings,
        book: ScheduleBook,
        store: WheelStore,
        firer: Firer,
        producer: Callable[[], AsyncProducer],
        flush: Callable[[], Awaitable[None]],
        *,
        tick: float,
        probe: RunProbe = unknown,
    ) -> None:
        self.settings = settings
        self.book = book
        self.store = store
        self.firer = firer
        self._producer = producer
        self._flush = flush
        self.tick = tick
        self.probe = probe
        self._swept = 0.0

    async def run(self) -> None:
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("schedule round failed; retrying")
            await asyncio.sleep(self.tick)

    async def round(self, now: int | None = None) -> int:
        """Plan every owned schedule once; returns how many runs were started."""
        started = 0
        parts = self.settings.partitions
        for name, spec in self.book.items():
            p = owner(name, parts)
            if p not in self.firer.active:
                continue
            started += await self._one(p, spec, now if now is not None else now_ms())
        if time.monotonic() - self._swept > SWEEP_SECONDS:
            self._sweep()
        return started

    async def _one(self, partition: int, spec: ScheduleSpec, now: int) -> int:
        key = state_key(spec.name)
        state = ScheduleState.decode(self.store.get(partition, key))
        decide = functools.partial(
            plan,
            name=spec.name,
            cron=spec.cron,
            timezone=spec.timezone,
            overlap=spec.overlap.value,
            catchup_window_ms=spec.catchup_window_ms,
            paused=spec.paused,
            updated_at=spec.updated_at,
            state=state,
            now=now,
        )
        p = decide(running=False)
        if p.fires and spec.overlap.value != "allow" and state and state.last_run:
            # Something is due and the policy cares whether the last run still
            # runs: ask (off the event loop; the probe may do I/O), decide again.
            loop = asyncio.get_running_loop()
            running = await loop.run_in_executor(None, self.probe, spec, state.last_run)
            if running is not False:
                p = decide(running=running)
        if p.state is None:
            return 0
        if p.fires:
            events = [start_event(self.settings, spec, t) for t in p.fires]
            await self._producer().send(events)
            log.info(
                "schedule fired",
                extra={"schedule": spec.name, "times": [utc_iso(t) for t in p.fires]},
            )
        # Written after the ack; the partition may have been revoked while we awaited.
        if partition in self.firer.active:
            self.store.write(partition, {key: p.state.encode()})
            await self._flush()
        metrics.SCHEDULE_FIRED.labels(spec.name).inc(len(p.fires))
        if p.late:
            metrics.SCHEDULE_SKIPPED.labels(spec.name, "late").inc(p.late)
            log.warning(
                "schedule firings missed beyond the catch-up window were skipped",
                extra={"schedule": spec.name, "skipped": p.late},
            )
        if p.overlapped:
            metrics.SCHEDULE_SKIPPED.labels(spec.name, "overlap").inc(p.overlapped)
        if p.guessed:
            metrics.SCHEDULE_OVERLAP_UNKNOWN.labels(spec.name).inc()
        return len(p.fires)

    def _sweep(self) -> None:
        """Drop the state of deleted schedules from the partitions we own."""
        self._swept = time.monotonic()
        for p in sorted(self.firer.active):
            stale = [
                k
                for k, _ in self.store.scan(p, STATE, b"t")
                if self.book.get(k[1:].decode()) is None
            ]
            if stale:
                self.store.write(p, None, stale)
