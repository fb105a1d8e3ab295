"""The indexer: reads every partition of ``events`` and folds it into the query model.

A plain assigned consumer (no group, nothing committed to Kafka): where to
start is the offset stored in the query database with the views, so the
views and the offsets move together (one ``WriteBatch`` per batch). A fresh
data dir starts every partition from the beginning — ``events`` is kept
forever — and rebuilds every view.

It runs in its own thread; HTTP handlers read the database concurrently
(RocksDB allows one writer and many readers) and ask :meth:`Indexer.position`
how far the views go, to wait for read-your-writes consistency.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from headrace.compacted import TRANSIENT
from headrace.core.codec import decode_event
from headrace.core.envelope import Event
from headrace.core.views import approval_refs, fold_event
from headrace.errors import HeadraceError
from headrace.kafka import make_consumer
from headrace.services.api.store import Changes, ViewStore, approval_key, run_key
from headrace.settings import Settings

log = logging.getLogger("headrace.api.indexer")

APPLIED = Counter("headrace_api_events_applied_total", "events folded into the views")
DUPLICATES = Counter(
    "headrace_api_events_duplicate_total", "redelivered events skipped (already reflected)"
)
UNDECODABLE = Counter("headrace_api_events_undecodable_total", "records that are not events")
BATCH_SECONDS = Histogram(
    "headrace_api_batch_seconds",
    "time to fold and write one batch of events",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
POSITION = Gauge("headrace_api_position", "next events offset to fold", ["partition"])
LAG = Gauge("headrace_api_lag", "events not yet folded (last known end - position)", ["partition"])


class Indexer:
    """Folds ``events`` into a :class:`ViewStore` in a background thread."""

    def __init__(self, settings: Settings, store: ViewStore, *, batch_size: int = 2000) -> None:
        self.settings = settings
        self.store = store
        self.topic = settings.topics.events
        self.batch_size = batch_size
        self.started_from: dict[int, int] = store.offsets()
        self._positions: dict[int, int] = dict(self.started_from)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.applied = 0
        self._assigned: set[int] = set()
        self._recheck = 0.0

    # -- life cycle ------------------------------------------------------------

    def start(self) -> Indexer:
        self._thread = threading.Thread(target=self._run, name="api-indexer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop after the batch in hand; True once the thread has ended, False if it still
        runs after ``timeout`` s (then it still uses the store: do not close it)."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            return False
        self._thread = None
        return True

    @property
    def healthy(self) -> bool:
        return self._error is None and self._thread is not None and self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        return self._error

    def position(self) -> dict[int, int]:
        """Next offset to fold per partition: the views reflect everything before it."""
        with self._lock:
            return dict(self._positions)

    def covers(self, offsets: dict[int, int]) -> bool:
        """Whether the views reflect every event before ``offsets`` (partition → offset)."""
        pos = self.position()
        return all(pos.get(p, 0) >= off for p, off in offsets.items())

    # -- the loop ----------------------------------------------------------------

    def _run(self) -> None:
        consumer = make_consumer(
            self.settings,
            f"{self.settings.topic_prefix}api-indexer",
            "headrace-api",
            enable_partition_eof=True,
            fetch_wait_max_ms=20,
        )
        try:
            log.info(
                "indexing %s from stored offsets %s", self.topic, self.started_from or "(none)"
            )
            while not self._stop.is_set():
                self._assign_new(consumer)
                if not self._assigned:
                    self._stop.wait(0.5)
                    continue
                msgs = consumer.consume(self.batch_size, 0.1)
                if msgs:
                    self._process(consumer, msgs)
        except BaseException as exc:  # surfaced by /healthz, never swallowed
            log.exception("indexer stopped")
            self._error = exc
        finally:
            consumer.close()

    def _assign_new(self, consumer: Any) -> None:
        if self._assigned and time.monotonic() < self._recheck:
            return
        self._recheck = time.monotonic() + 10.0
        try:
            meta = consumer.list_topics(self.topic, timeout=5.0)
        except Exception as exc:
            log.warning("cannot read metadata of %s: %s", self.topic, exc)
            return
        info = meta.topics.get(self.topic)
        if info is None or info.error is not None or not info.partitions:
            return
        new = sorted(set(info.partitions) - self._assigned)
        if not new:
            return
        consumer.incremental_assign(
            [TopicPartition(self.topic, p, self.started_from.get(p, OFFSET_BEGINNING)) for p in new]
        )
        self._assigned.update(new)
        log.info("indexer assigned %s[%s]", self.topic, ",".join(map(str, new)))

    def _process(self, consumer: Any, msgs: list[Any]) -> None:
        started = time.perf_counter()
        events: list[tuple[int, int, Event]] = []
        ends: dict[int, int] = {}
        for m in msgs:
            err = m.error()
            partition, offset = m.partition() or 0, m.offset() or 0
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    ends[partition] = max(ends.get(partition, 0), offset)
                elif err.code() not in TRANSIENT:
                    log.warning("events consumer: %s", err)
                continue
            ends[partition] = max(ends.get(partition, 0), offset + 1)
            value = m.value()
            if value is None:
                continue
            try:
                events.append((partition, offset, decode_event(value)))
            except HeadraceError as exc:
                UNDECODABLE.inc()
                log.error(
                    "undecodable record in %s[%d]@%d skipped: %s",
                    self.topic,
                    partition,
                    offset,
                    exc.message,
                )
        changes = self.fold(events)
        with self._lock:
            pos = dict(self._positions)
        changes.offsets = {p: o for p, o in ends.items() if o > pos.get(p, 0)}
        if changes.offsets or changes.runs:
            self.store.write(changes)
        with self._lock:
            for p, o in changes.offsets.items():
                self._positions[p] = o
            positions = dict(self._positions)
        for p, o in positions.items():
            POSITION.labels(str(p)).set(o)
            try:
                high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)[1]
                if high >= 0:
                    LAG.labels(str(p)).set(max(0, high - o))
            except Exception:
                pass
        BATCH_SECONDS.observe(time.perf_counter() - started)

    def fold(self, events: list[tuple[int, int, Event]]) -> Changes:
        """Fold a batch of events into the views they touch (each read from the store once)."""
        ch = Changes()
        runs: dict[bytes, dict[str, Any] | None] = {}
        approvals: dict[bytes, dict[str, Any] | None] = {}
        for _, _, event in events:
            key = run_key(event.tenant, event.run_id)
            if key not in runs:
                loaded = runs[key] = self.store.run_at(key)
                ch.run_status_before[key] = None if loaded is None else loaded["status"]
            run = runs[key]
            records: dict[str, dict[str, Any] | None] = {}
            for aid in approval_refs(run, event):
                akey = approval_key(event.tenant, aid)
                if akey not in approvals:
                    rec = approvals[akey] = self.store.approval_at(akey)
                    ch.approval_status_before[akey] = None if rec is None else rec["status"]
                records[aid] = approvals[akey]
            folded = fold_event(run, records, event)
            if folded is None:
                DUPLICATES.inc()
                continue
            APPLIED.inc()
            self.applied += 1
            runs[key] = ch.runs[key] = folded.run
            for aid, rec in folded.approvals.items():
                akey = approval_key(event.tenant, aid)
                approvals[akey] = ch.approvals[akey] = rec
            ch.samples.extend(folded.samples)
        return ch
