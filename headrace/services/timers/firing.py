"""The fire loop: produce the commands of due timers, then forget them.

One loop per worker walks the partitions it owns. For each it takes the due
timers (``due <= now``, earliest first) up to what the partition's token bucket
allows, produces their commands to ``commands`` on the same partition number
(``timers`` and ``commands`` are co-partitioned), awaits the acknowledgements
and only then deletes the timers: a crash in between fires them again, which is
harmless (the orchestrator dedupes on the timer id), while deleting first could
lose one. Between rounds it sleeps until the next due time, the next token, or
a wake-up from the arm agent when an earlier timer is armed.

Storms: a partition fires at most ``fire_rate`` timers a second; the rest wait
in due order (``headrace_timers_backlog``, ``..._backlog_seconds``), and every
round yields to the event loop, so arming and the other partitions go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from headrace.core.outbox import Outgoing
from headrace.errors import HeadraceError
from headrace.services.timers import metrics
from headrace.services.timers.config import TimerSettings
from headrace.services.timers.wheel import Due, Wheel
from headrace.streams.producer import AsyncProducer

log = logging.getLogger("headrace.timers")


def now_ms() -> int:
    return int(time.time() * 1000)


class Bucket:
    """A token bucket: ``rate`` tokens a second, at most ``capacity`` saved up."""

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, capacity)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def available(self) -> int:
        t = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (t - self.at) * self.rate)
        self.at = t
        return int(self.tokens)

    def take(self, n: int) -> None:
        self.tokens -= n

    def seconds_until(self, n: int = 1) -> float:
        return max(0.0, (n - self.tokens) / self.rate)


class Firer:
    """Fires the due timers of the partitions in ``active``."""

    def __init__(
        self,
        wheel: Wheel,
        producer: Callable[[], AsyncProducer],
        commands_topic: str,
        config: TimerSettings,
        flush: Callable[[], Awaitable[None]],
    ) -> None:
        self.wheel = wheel
        self._producer = producer
        self._flush = flush
        self.topic = commands_topic
        self.config = config
        self.active: set[int] = set()
        self.floor: dict[int, int] = {}  # no armed timer of the partition is due before this
        self.buckets: dict[int, Bucket] = {}
        self.wake = asyncio.Event()
        self.inflight: dict[int, set[bytes]] = {}  # keys produced, not yet acked and deleted
        self._rounds: dict[asyncio.Task[None], set[int]] = {}
        self._counted: dict[int, float] = {}

    # -- ownership -------------------------------------------------------------

    def add(self, partition: int) -> None:
        self.floor[partition] = 0
        self.inflight[partition] = set()
        self.buckets.setdefault(
            partition,
            Bucket(self.config.fire_rate, self.config.fire_rate * self.config.fire_burst),
        )
        self.active.add(partition)
        metrics.ACTIVE_PARTITIONS.set(len(self.active))
        self.wake.set()

    async def remove(self, partitions: set[int], timeout: float = 30.0) -> None:
        """Stop firing ``partitions``; returns once no round that touches them is in flight."""
        self.active -= partitions
        metrics.ACTIVE_PARTITIONS.set(len(self.active))
        for p in partitions:
            metrics.BACKLOG.labels(str(p)).set(0)
            metrics.LAG.labels(str(p)).set(0)
        busy = [t for t, parts in self._rounds.items() if parts & partitions]
        if busy:
            _, pending = await asyncio.wait(busy, timeout=timeout)
            if pending:
                log.warning("fire rounds still ran when partitions %s were revoked", partitions)

    def armed(self, partition: int, earliest: int) -> None:
        """The agent armed a timer due at ``earliest``: lower the floor, wake if it is sooner."""
        if earliest < self.floor.get(partition, 0):
            self.floor[partition] = earliest
        if earliest <= now_ms() + 1000 * self.config.idle_tick:
            self.wake.set()

    # -- the loop ----------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                try:
                    delay = await self.round()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("fire round failed; retrying in 1 s")
                    delay = 1.0
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), delay)
                else:
                    await asyncio.sleep(0)
                self.wake.clear()
        finally:
            for t in list(self._rounds):
                t.cancel()

    async def round(self) -> float:
        """Start one round of firing; returns how long to sleep before the next one.

        Rounds overlap (up to ``fire_inflight``): a round's keys stay in
        ``inflight`` until acknowledged and deleted, and later rounds skip them.
        """
        while len(self._rounds) >= self.config.fire_inflight:
            await asyncio.wait(list(self._rounds), return_when=asyncio.FIRST_COMPLETED)
        now = now_ms()
        sleep = self.config.idle_tick
        work: list[tuple[int, list[Due]]] = []
        for p in sorted(self.active):
            bucket = self.buckets[p]
            budget = min(bucket.available(), self.config.fire_batch)
            if budget < 1:
                sleep = min(sleep, bucket.seconds_until(1))
                self._gauge(p, now, backlog=True)
                continue
            flying = self.inflight.setdefault(p, set())
            scanned = self.wheel.due(p, now, budget + len(flying), self.floor.get(p, 0))
            items = [d for d in scanned if d.key not in flying][:budget]
            if items:
                bucket.take(len(items))
                work.append((p, items))
                flying.update(d.key for d in items)
            full = len(items) == budget
            # No unfired timer is due before the floor, apart from those in flight.
            self.floor[p] = items[-1].due if full else now + 1
            if full:
                sleep = 0.0 if bucket.available() >= 1 else min(sleep, bucket.seconds_until(1))
                self._gauge(p, now, backlog=True, oldest=items[0].due)
            else:
                self._gauge(p, now, backlog=False)
                nxt = self.wheel.next_due(p, now + 1)
                if nxt is not None:
                    sleep = min(sleep, max(0.0, (nxt - now_ms()) / 1000))
        if work:
            task = asyncio.create_task(self._fire(work))
            self._rounds[task] = {p for p, _ in work}
            task.add_done_callback(self._rounds.pop)
        return sleep

    async def _fire(self, work: list[tuple[int, list[Due]]]) -> None:
        messages = [
            Outgoing(self.topic, d.record.command, d.record.run_key, p)
            for p, items in work
            for d in items
        ]
        try:
            await self._producer().send(messages)
        except HeadraceError as exc:
            metrics.FIRE_ERRORS.inc()
            log.error("firing %d timers failed, will retry: %s", len(messages), exc.message)
            for p, items in work:
                self.floor[p] = min(self.floor.get(p, 0), items[0].due)
                self.inflight.get(p, set()).difference_update(d.key for d in items)
            await asyncio.sleep(0.5)
            self.wake.set()
            return
        acked = now_ms()
        for p, items in work:
            for d in items:
                metrics.DRIFT.observe(max(0, acked - d.due) / 1000)
            # A revocation waits for this round (remove), so the partition's
            # database is still ours even if it is no longer active.
            self.wheel.remove_fired(p, items)
            self.inflight.get(p, set()).difference_update(d.key for d in items)
        metrics.FIRED.inc(len(messages))
        try:
            await self._flush()
        except HeadraceError as exc:
            # The tombstones stay queued; a lost one only means a second firing.
            log.warning("changelog tombstones of fired timers not sent yet: %s", exc.message)

    def _gauge(self, p: int, now: int, *, backlog: bool, oldest: int | None = None) -> None:
        label = str(p)
        if not backlog:
            metrics.BACKLOG.labels(label).set(0)
            metrics.LAG.labels(label).set(0)
            return
        if oldest is not None:
            metrics.LAG.labels(label).set(max(0, now - oldest) / 1000)
        # Counting walks the keys: at most once a second per partition.
        t = time.monotonic()
        if t - self._counted.get(p, 0.0) >= 1.0:
            self._counted[p] = t
            count = self.wheel.count_due(p, now, self.config.backlog_cap, self.floor.get(p, 0))
            metrics.BACKLOG.labels(label).set(count)
