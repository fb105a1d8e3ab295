"""Read one partition of a topic from an offset up to its current end.

Used for replay (fold ``events`` beyond the snapshot when a worker takes a
partition) and by the CLI's ``history``. A plain assigned consumer without a
group: it commits nothing and joins no rebalance.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from headrace.errors import ErrorCode, HeadraceError


@dataclass(frozen=True, slots=True)
class Record:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp_ms: int = 0


def end_offsets(consumer: Consumer, topic: str, partition: int, timeout: float) -> tuple[int, int]:
    low, high = consumer.get_watermark_offsets(
        TopicPartition(topic, partition), timeout=timeout, cached=False
    )
    return int(low), int(high)


def read_partition(
    bootstrap: str,
    topic: str,
    partition: int,
    start: int = 0,
    *,
    stop_at: int | None = None,
    timeout: float = 30.0,
    isolation: str = "read_uncommitted",
) -> Iterator[Record]:
    """Yield records of ``topic[partition]`` with ``start <= offset < end``.

    ``end`` is ``stop_at`` or the partition's high watermark when the read
    begins. Raises ``HeadraceError(KAFKA_TIMEOUT)`` if the end is not reached
    within ``timeout`` seconds of silence.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "headrace-partition-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        low, high = end_offsets(consumer, topic, partition, timeout)
        end = high if stop_at is None else min(stop_at, high)
        begin = max(start, low)
        if begin >= end:
            return
        consumer.assign(
            [TopicPartition(topic, partition, begin if begin > 0 else OFFSET_BEGINNING)]
        )
        last_progress = time.monotonic()
        while True:
            # consume() waits until it has num_messages or its timeout passes, so
            # ask with a short timeout and track the stall deadline separately.
            msgs = consumer.consume(2000, 0.05)
            if not msgs:
                if time.monotonic() - last_progress > timeout:
                    raise HeadraceError(
                        ErrorCode.KAFKA_TIMEOUT,
                        f"reading {topic}[{partition}] stalled before offset {end} "
                        f"(no message for {timeout:.0f} s) — is the broker up?",
                    )
                continue
            last_progress = time.monotonic()
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if (m.offset() or 0) >= end:
                            return
                        continue
                    raise HeadraceError(
                        ErrorCode.KAFKA_UNAVAILABLE, f"reading {topic}[{partition}]: {err}"
                    )
                off = m.offset() or 0
                if off >= end:
                    return
                yield Record(
                    off,
                    m.key(),
                    m.value(),
                    tuple(m.headers() or ()),  # type: ignore[arg-type]
                    m.timestamp()[1],
                )
                if off + 1 >= end:
                    return
    finally:
        consumer.close()
