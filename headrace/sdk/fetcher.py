"""One queue's consumer: fetch dispatches, highest priority band first, and commit safely.

Each queue a worker serves gets one :class:`QueueFetcher` — a thread owning a
confluent-kafka consumer in the queue's group (``<prefix>workers.<queue>``,
so worker processes of a queue share its partitions) subscribed to the
queue's five dispatch topics (``tasks.<queue>.p9`` … ``.p6`` and the base
topic, docs/tasks.md). It:

* keeps a small local buffer of fetched dispatches (``prefetch``) and hands
  them to the worker as task slots free up, highest band first;
* pauses the partitions of lower bands while a higher band has lag (fetched
  but untaken records, or a high watermark beyond the position), so a backlog
  of low-priority tasks never delays a high-priority one by more than the
  tasks already running;
* tracks every fetched offset until its final result is acknowledged and
  commits, at most every ``commit_interval``, the lowest offset still in
  progress per partition (at-least-once) — asynchronously, handing a position
  out again when its commit fails, and synchronously, moved or not, when
  partitions leave (revoke, drain), so no failed commit goes unnoticed;
* on stop (drain): takes nothing new, gives back what it buffered but never
  started, waits for the started tasks' results, commits, and leaves the group.

Everything that touches the consumer runs on this thread (confluent-kafka
serves rebalance callbacks inside ``poll``), so no lock guards it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as TP

from headrace.core.task_codec import TaskDispatch, decode_dispatch
from headrace.errors import HeadraceError
from headrace.kafka import consumer_config as kafka_consumer_config
from headrace.sdk.offsets import PartitionOffsets
from headrace.sdk.slots import Slots
from headrace.settings import Settings
from headrace.topology import task_topics

log = logging.getLogger("headrace.sdk.fetcher")

# While the buffer is full, librdkafka's own queue holds what is fetched (and stops
# fetching when it is full); we poll only this often, to serve rebalances, taking at
# most one record each time. Full this long means slow handlers: pause fetching.
_POLL_WHEN_FULL_S = 0.25
_PAUSE_WHEN_FULL_S = 30.0
_REPRIORITIZE_S = 0.05


@dataclass(slots=True)
class Fetched:
    """A dispatch taken from Kafka, with what is needed to release its offset."""

    dispatch: TaskDispatch
    offsets: PartitionOffsets
    offset: int
    partition_key: tuple[str, int] = ("", 0)

    def finish(self) -> None:
        self.offsets.finish(self.offset)


@dataclass(slots=True)
class _Part:
    tp: TP
    rank: int  # 0 = highest band
    offsets: PartitionOffsets
    start: int  # where consumption of this assignment began (for lag before any record)
    high: int = -1  # highest high watermark seen (cached or asked for)


def group_id(settings: Settings, queue: str) -> str:
    """The consumer group of ``queue``'s workers."""
    return f"{settings.topic_prefix}workers.{queue}"


class QueueFetcher:
    """The consumer thread of one queue (see the module docstring)."""

    def __init__(
        self,
        queue: str,
        settings: Settings,
        *,
        slots: Slots,
        deliver: Callable[[list[Fetched]], None],
        dead_letter: Callable[[Message, str, PartitionOffsets], None],
        prefetch: int,
        commit_interval: float = 0.2,
        revoke_grace: float = 2.0,
        consumer_config: dict[str, Any] | None = None,
    ) -> None:
        self.queue = queue
        self.settings = settings
        self.slots = slots
        self.deliver = deliver
        self.dead_letter = dead_letter
        self.prefetch = max(1, prefetch)
        self.commit_interval = commit_interval
        self.revoke_grace = revoke_grace
        self.topics = task_topics(queue, settings.topic_prefix)
        self._rank = {t: i for i, t in enumerate(self.topics)}
        self._buffer: list[deque[Fetched]] = [deque() for _ in self.topics]
        self._buffered = 0
        self._parts: dict[tuple[str, int], _Part] = {}
        self._paused: set[tuple[str, int]] = set()
        self._all_paused = False
        self._top: int | None = None  # highest band with known lag (None: no band waits)
        self._full_since: float | None = None
        self._last_full_poll = 0.0
        self._last_commit = 0.0
        self._last_prio = 0.0
        self._stop = threading.Event()
        self._drain_deadline = 0.0
        self.assigned = threading.Event()  # set once a first assignment arrived
        self.error: BaseException | None = None
        conf = {
            "partition.assignment.strategy": "cooperative-sticky",
            # A crashed worker's partitions move after this long.
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 2_000,
            "fetch.wait.max.ms": 50,
            "on_commit": self._on_commit,
            **(consumer_config or {}),
        }
        self._consumer = Consumer(
            kafka_consumer_config(
                settings, group_id(settings, queue), f"headrace-worker-{queue}", **conf
            )
        )
        self._thread = threading.Thread(
            target=self._run, name=f"headrace-fetch-{queue}", daemon=True
        )

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        self._thread.start()

    def stop(self, drain_timeout: float) -> None:
        """Begin the drain; the thread ends after it (see :meth:`join`)."""
        self._drain_deadline = time.monotonic() + drain_timeout
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def in_progress(self) -> int:
        return sum(p.offsets.in_progress() for p in list(self._parts.values()))

    # -- the loop ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._step()
            self._drain()
        except BaseException as exc:  # the worker learns of it and stops
            self.error = exc
            log.exception("fetcher of queue %s failed", self.queue)
            with contextlib.suppress(Exception):
                self._consumer.close()

    def _step(self) -> None:
        self._hand_out()
        now = time.monotonic()
        if now - self._last_commit >= self.commit_interval:
            self._commit(now)
        if len(self.topics) > 1 and now - self._last_prio >= _REPRIORITIZE_S:
            self._last_prio = now
            self._reprioritize()
        ready = self._ready()
        if ready >= self.prefetch:
            if self._full_since is None:
                self._full_since = now
            elif now - self._full_since > _PAUSE_WHEN_FULL_S and not self._all_paused:
                self._pause_all()
            self.slots.wait_free(0.05)
            if now - self._last_full_poll >= _POLL_WHEN_FULL_S:
                # Serve rebalances and keep our group membership while full.
                self._last_full_poll = now
                self._take(self._consumer.poll(0))
            return
        self._full_since = None
        if self._all_paused:
            self._resume_all()
        if ready and self.slots.free() <= 0:
            # Records wait for a slot: wake as soon as one frees, fetch meanwhile.
            self.slots.wait_free(0.05)
            self._take(self._consumer.poll(0))
            return
        self._take(self._consumer.poll(0.1))
        room = self.prefetch - self._ready()
        if room > 0:
            for msg in self._consumer.consume(room, 0):
                self._take(msg)

    def _ready(self) -> int:
        """Buffered records that may go next (none of a band below one with known lag)."""
        if self._top is None:
            return self._buffered
        return sum(len(b) for b in self._buffer[: self._top + 1])

    def _take(self, msg: Message | None) -> None:
        if msg is None:
            return
        err = msg.error()
        if err is not None:
            self._consumer_error(err)
            return
        part = self._parts.get((msg.topic() or "", msg.partition() or 0))
        if part is None:  # a record of a partition revoked meanwhile
            return
        offset = msg.offset() or 0
        part.offsets.add(offset)
        try:
            dispatch = decode_dispatch(msg.value() or b"")
        except HeadraceError as exc:
            self.dead_letter(msg, exc.message, part.offsets)
            return
        fetched = Fetched(dispatch, part.offsets, offset, (part.tp.topic, part.tp.partition))
        if dispatch.kind.value == "cancel":
            self._drop_cancelled(dispatch)
            self.deliver([fetched])  # no slot needed: it only stops a running task
            return
        self._buffer[part.rank].append(fetched)
        self._buffered += 1

    def _drop_cancelled(self, cancel: TaskDispatch) -> None:
        """A cancelled attempt still waiting in the buffer never starts."""
        for band in self._buffer:
            for f in [f for f in band if f.dispatch.task_id == cancel.task_id]:
                if f.dispatch.attempt == cancel.attempt:
                    band.remove(f)
                    self._buffered -= 1
                    f.finish()

    def _hand_out(self) -> None:
        # Records of bands below one with known lag wait, even with slots free: the
        # higher band's records are on their way and go first.
        waiting = self._ready()
        if not waiting:
            return
        n = self.slots.take(waiting)
        if not n:
            return
        batch: list[Fetched] = []
        for band in self._buffer:
            while n and band:
                batch.append(band.popleft())
                n -= 1
        self._buffered -= len(batch)
        self.deliver(batch)

    def _consumer_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.fatal():
            raise KafkaException(err)
        log.warning("consumer of queue %s: %s", self.queue, err.str())

    # -- priority ------------------------------------------------------------------

    def _reprioritize(self) -> None:
        if not self._parts:
            self._top = None
            return
        if self._all_paused:
            return  # nothing moves while everything is paused; decide on resume
        top = self._top = self._top_band_with_backlog()
        want = {k for k, p in self._parts.items() if p.rank > top} if top is not None else set()
        pause = [self._parts[k].tp for k in want - self._paused]
        resume = [self._parts[k].tp for k in self._paused - want if k in self._parts]
        if pause:
            self._consumer.pause(pause)
        if resume:
            self._consumer.resume(resume)
        self._paused = want

    def _top_band_with_backlog(self) -> int | None:
        by_rank: dict[int, list[_Part]] = {}
        for p in self._parts.values():
            by_rank.setdefault(p.rank, []).append(p)
        ranks = sorted(by_rank)
        if len(ranks) < 2:
            return None
        for rank in ranks[:-1]:  # the lowest band never pauses anything
            if self._buffer[rank]:
                return rank
            parts = by_rank[rank]
            positions = self._consumer.position([p.tp for p in parts])
            for p, pos in zip(parts, positions, strict=True):
                low, high = self._consumer.get_watermark_offsets(p.tp, cached=True)
                if high < 0 or (p.tp.topic, p.tp.partition) in self._paused:
                    # A paused partition fetches nothing, so its cached watermark is stale:
                    # ask the broker (only on the way down to this band, so rarely).
                    low, high = self._broker_watermarks(p.tp, low, high)
                p.high = max(p.high, high)
                at = pos.offset if pos.offset >= 0 else p.start if p.start >= 0 else low
                if p.high >= 0 and at >= 0 and p.high > at:
                    return rank
        return None

    def _broker_watermarks(self, tp: TP, low: int, high: int) -> tuple[int, int]:
        try:
            fresh_low, fresh_high = self._consumer.get_watermark_offsets(
                tp, timeout=2, cached=False
            )
        except KafkaException as exc:
            # Unknown counts as empty: a broker hiccup must not starve the lower bands.
            log.debug("watermarks of %s[%d] unavailable: %s", tp.topic, tp.partition, exc)
            return low, high
        return (fresh_low if low < 0 else low), max(high, fresh_high)

    def _pause_all(self) -> None:
        tps = [p.tp for k, p in self._parts.items() if k not in self._paused]
        if tps:
            self._consumer.pause(tps)
        self._paused = set(self._parts)
        self._all_paused = True

    def _resume_all(self) -> None:
        tps = [self._parts[k].tp for k in self._paused if k in self._parts]
        if tps:
            self._consumer.resume(tps)
        self._paused = set()
        self._all_paused = False

    # -- offsets -------------------------------------------------------------------

    def _commit(self, now: float, parts: list[_Part] | None = None, sync: bool = False) -> None:
        """Commit the partitions' positions: those that moved, asynchronously; or, ``sync``
        (the partitions are leaving), every one, and wait for the broker's answer."""
        self._last_commit = now
        chosen = parts if parts is not None else list(self._parts.values())
        offsets = []
        for p in chosen:
            pos = p.offsets.to_commit_now() if sync else p.offsets.to_commit()
            if pos is not None:
                offsets.append(TP(p.tp.topic, p.tp.partition, pos))
        if not offsets:
            return
        try:
            if sync:
                answer = self._consumer.commit(offsets=offsets, asynchronous=False)
                failed = [tp for tp in answer or [] if tp.error is not None]
                if failed:
                    self._commit_failed(failed, None, final=True)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            # The next commit carries the same or a later position; nothing is lost.
            for p in chosen:
                p.offsets.committed = None
            log.warning("commit of queue %s offsets failed: %s", self.queue, exc)

    def _on_commit(self, err: KafkaError | None, partitions: list[TP]) -> None:
        """librdkafka's verdict on a commit (served inside ``poll``, on this thread)."""
        if err is not None and err.code() == KafkaError._NO_OFFSET:
            return
        failed = [tp for tp in partitions if err is not None or tp.error is not None]
        if failed:
            self._commit_failed(failed, err, final=False)

    def _commit_failed(self, failed: list[TP], err: KafkaError | None, *, final: bool) -> None:
        for tp in failed:
            part = self._parts.get((tp.topic, tp.partition))
            if part is not None:
                # Hand the position out again: the next commit retries it.
                part.offsets.commit_failed(tp.offset)
        log.warning(
            "commit of queue %s offsets failed (%s); %s",
            self.queue,
            ", ".join(
                f"{tp.topic}[{tp.partition}]@{tp.offset}: {tp.error or err}" for tp in failed
            ),
            "their next owner may run tasks finished here again"
            if final
            else "the next commit retries it",
        )

    # -- rebalances ----------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TP]) -> None:
        try:
            committed = consumer.committed(partitions, timeout=10)
        except KafkaException:
            committed = partitions
        for tp, c in zip(partitions, committed, strict=True):
            key = (tp.topic, tp.partition)
            rank = self._rank.get(tp.topic, len(self.topics) - 1)
            start = c.offset if c.offset >= 0 else OFFSET_INVALID
            self._parts[key] = _Part(TP(tp.topic, tp.partition), rank, PartitionOffsets(), start)
        if self._all_paused and partitions:
            consumer.pause(partitions)
            self._paused.update((tp.topic, tp.partition) for tp in partitions)
        log.info(
            "queue %s: assigned %s",
            self.queue,
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing",
        )
        self.assigned.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TP]) -> None:
        keys = set(self._keys(partitions))
        gone = [self._parts[k] for k in keys if k in self._parts]
        self._give_back(keys)
        # Started attempts of these partitions get a moment to finish, so that their
        # new owner does not run them a second time (it would be harmless, not free).
        deadline = time.monotonic() + self.revoke_grace
        while any(p.offsets.in_progress() for p in gone) and time.monotonic() < deadline:
            time.sleep(0.01)
        self._commit(time.monotonic(), gone, sync=True)
        self._forget(keys)

    def _on_lost(self, consumer: Consumer, partitions: list[TP]) -> None:
        keys = set(self._keys(partitions))
        self._give_back(keys)
        self._forget(keys)

    def _give_back(self, keys: set[tuple[str, int]] | None = None) -> None:
        """Drop buffered records (of ``keys``, or all) unstarted; commits stay below them."""
        for band in self._buffer:
            kept = []
            for f in band:
                if keys is None or (f.partition_key in keys):
                    f.offsets.abandon(f.offset)
                else:
                    kept.append(f)
            self._buffered -= len(band) - len(kept)
            band.clear()
            band.extend(kept)

    def _forget(self, keys: set[tuple[str, int]]) -> None:
        for k in keys:
            part = self._parts.pop(k, None)
            if part is not None:
                part.offsets.revoked = True
            self._paused.discard(k)
        if keys:
            log.info("queue %s: revoked %d partition(s)", self.queue, len(keys))

    @staticmethod
    def _keys(partitions: list[TP]) -> list[tuple[str, int]]:
        return [(tp.topic, tp.partition) for tp in partitions]

    # -- drain ---------------------------------------------------------------------

    def _drain(self) -> None:
        self._give_back()
        self._pause_all()
        while self.in_progress and time.monotonic() < self._drain_deadline:
            if time.monotonic() - self._last_commit >= self.commit_interval:
                self._commit(time.monotonic())
            self._consumer.poll(0.05)
        left = self.in_progress
        if left:
            log.warning(
                "queue %s: %d task(s) still running at the end of the drain; they will be "
                "redelivered",
                self.queue,
                left,
            )
        self._commit(time.monotonic(), sync=True)
        self._consumer.close()
        log.info(
            "queue %s: drained and left group %s", self.queue, group_id(self.settings, self.queue)
        )
