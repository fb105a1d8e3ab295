"""A compacted topic read whole and followed: the platform's small global tables.

Definitions, business calendars and schedules are each a compacted topic
keyed by name that every worker needs in full. :class:`CompactedReader` reads
such a topic from the beginning in a background thread (a plain assigned
consumer: no group, nothing committed), hands every record to a callback and
keeps following; :meth:`~CompactedReader.wait_current` blocks until what the
topic held when it was called has been read. :class:`CompactedMap` is the
common case on top: last record per key wins, a tombstone deletes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from headrace.errors import ErrorCode, HeadraceError
from headrace.kafka import make_consumer
from headrace.settings import Settings

log = logging.getLogger("headrace.compacted")

# Errors of a topic that was created a moment ago or is changing leader.
TRANSIENT = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
    }
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int


class CompactedReader:
    """Follows every partition of ``topic`` from its start, calling ``on_record`` in log order."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        on_record: Callable[[Record], None],
        *,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.name = name or topic
        self._on_record = on_record
        self._positions: dict[int, int] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: Exception | None = None
        self._known: set[int] = set()
        self._recheck = 0.0

    def start(self, wait: float | None = 30.0) -> CompactedReader:
        """Start following; with ``wait``, return once caught up with the topic's end."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        if wait is not None:
            self.wait_current(wait)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _ends(self, timeout: float) -> dict[int, int]:
        """High watermark of every partition; retries transient errors until ``timeout``."""
        deadline = time.monotonic() + timeout
        consumer = make_consumer(self.settings, f"headrace-{self.name}-probe")
        try:
            while True:
                try:
                    meta = consumer.list_topics(self.topic, timeout=timeout)
                    info = meta.topics.get(self.topic)
                    parts = sorted(info.partitions) if info is not None and info.partitions else [0]
                    return {
                        p: consumer.get_watermark_offsets(
                            TopicPartition(self.topic, p), timeout=timeout, cached=False
                        )[1]
                        for p in parts
                    }
                except KafkaException as exc:
                    err = exc.args[0]
                    transient = isinstance(err, KafkaError) and err.code() in TRANSIENT
                    if not transient or time.monotonic() > deadline:
                        raise self._unreachable(exc) from exc
                    time.sleep(0.2)
        finally:
            consumer.close()

    def _unreachable(self, exc: Exception) -> HeadraceError:
        return HeadraceError(
            ErrorCode.KAFKA_UNAVAILABLE,
            f"cannot read the end of {self.topic} at {self.settings.bootstrap}: {exc} — "
            "is Kafka up and were the topics created (`headrace topics ensure`)?",
        )

    def wait_current(self, timeout: float = 30.0) -> None:
        """Block until everything in the topic as of now has been read."""
        self._wait(self._ends(timeout), timeout)

    def wait_position(self, position: int, timeout: float = 30.0, partition: int = 0) -> None:
        """Block until the records of ``partition`` before offset ``position`` have been read."""
        self._wait({partition: position}, timeout)

    def _wait(self, ends: dict[int, int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(self._positions.get(p, 0) < high for p, high in ends.items()):
                if self._error is not None:
                    raise self._error
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HeadraceError(
                        ErrorCode.KAFKA_TIMEOUT,
                        f"{self.topic} not read up to offsets {ends} within {timeout:.0f} s "
                        f"(at {self._positions})",
                    )
                self._cond.wait(min(left, 0.5))

    def _advance(self, partition: int, position: int) -> None:
        with self._cond:
            if position > self._positions.get(partition, 0):
                self._positions[partition] = position
            self._cond.notify_all()

    def _run(self) -> None:
        consumer = make_consumer(
            self.settings,
            f"headrace-{self.name}-reader",
            enable_partition_eof=True,
            fetch_wait_max_ms=50,
        )
        assigned: set[int] = set()
        try:
            while not self._stop.is_set():
                parts = self._partitions(consumer)
                if parts - assigned:
                    consumer.incremental_assign(
                        [TopicPartition(self.topic, p, 0) for p in sorted(parts - assigned)]
                    )
                    assigned |= parts
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self._advance(msg.partition() or 0, msg.offset() or 0)
                        continue
                    if err.code() in TRANSIENT:
                        self._stop.wait(0.5)
                        continue
                    log.warning("%s reader: %s", self.name, err)
                    continue
                offset = msg.offset() or 0
                partition = msg.partition() or 0
                self._on_record(Record(msg.key(), msg.value(), partition, offset))
                self._advance(partition, offset + 1)
        except Exception as exc:  # surfaced to waiters, never swallowed
            log.exception("%s reader stopped", self.name)
            with self._cond:
                self._error = exc
                self._cond.notify_all()
        finally:
            consumer.close()

    def _partitions(self, consumer: Consumer) -> set[int]:
        """The topic's partitions, looked up again every 30 s (partitions can be added)."""
        if self._known and time.monotonic() < self._recheck:
            return self._known
        try:
            meta = consumer.list_topics(self.topic, timeout=5.0)
            info = meta.topics.get(self.topic)
            parts = set(info.partitions) if info is not None and info.partitions else {0}
        except Exception:
            parts = {0}
        self._known = parts
        self._recheck = time.monotonic() + 30.0
        return parts


class CompactedMap(Generic[T]):
    """A compacted topic as a dict: key (str) → decoded value; the last record of a key wins.

    ``decode(key, value)`` turns a record into a value; when it raises, the
    record is logged and skipped (the previous value of the key stays).
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        decode: Callable[[str, bytes], T],
        *,
        name: str | None = None,
    ) -> None:
        self._decode = decode
        self._items: dict[str, T] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str, T | None], None]] = []
        self.reader = CompactedReader(settings, topic, self._apply, name=name)

    def _apply(self, rec: Record) -> None:
        key = (rec.key or b"").decode("utf-8", "replace")
        value: T | None = None
        if rec.value is not None:
            try:
                value = self._decode(key, rec.value)
            except Exception as exc:
                log.error(
                    "%s: record at offset %d (key %r) is unreadable and ignored: %s",
                    self.reader.topic,
                    rec.offset,
                    key,
                    exc,
                )
                return
        with self._lock:
            if value is None:
                self._items.pop(key, None)
            else:
                self._items[key] = value
            listeners = list(self._listeners)
        for listener in listeners:
            listener(key, value)

    def get(self, key: str) -> T | None:
        with self._lock:
            return self._items.get(key)

    def items(self) -> list[tuple[str, T]]:
        with self._lock:
            return sorted(self._items.items())

    def on_change(self, listener: Callable[[str, T | None], None]) -> None:
        """Call ``listener(key, value_or_None)`` for every record read from now on."""
        with self._lock:
            self._listeners.append(listener)

    def start(self, wait: float | None = 30.0) -> CompactedMap[T]:
        self.reader.start(wait)
        return self

    def stop(self) -> None:
        self.reader.stop()

    def wait_current(self, timeout: float = 30.0) -> None:
        self.reader.wait_current(timeout)

    def __enter__(self) -> CompactedMap[T]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
