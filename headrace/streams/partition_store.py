"""A faust RocksDB table addressed by explicit partition, with ordered scans.

faust's table API finds the partition of a read or write from the stream event
being processed (``current_event()``). headrace's processors work in batches
(``take_events``), fold logs during replay, and fire timers from a background
loop — often with no current event at all — so they name the partition
themselves. This adapter is the one place that reaches below faust's public
``Table`` API:

* writes go to the partition's RocksDB database as one atomic ``WriteBatch``,
  and to the changelog through ``Table.send_changelog(partition, ...)`` (public),
  so faust restores them on whichever worker takes the partition next;
* reads and ordered range scans go to the partition's database directly.

It relies on ``Store._db_for_partition`` of faust's rocksdb store (raw-mode
rocksdict databases, one per partition); ``tests/streams/test_partition_store.py``
pins that behaviour. The table must use ``key_serializer='raw'`` and
``value_serializer='raw'``: keys and values are bytes end to end.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from rocksdict import WriteBatch


class PartitionStore:
    """Bytes-to-bytes store over a faust ``Table``, one RocksDB per partition."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def db(self, partition: int) -> Any:
        return self.table.data._db_for_partition(partition)

    def get(self, partition: int, key: bytes) -> bytes | None:
        value = self.db(partition).get(key)
        return None if value is None else bytes(value)

    def write(
        self,
        partition: int,
        puts: Mapping[bytes, bytes] | None = None,
        deletes: list[bytes] | tuple[bytes, ...] = (),
    ) -> None:
        """Apply ``puts`` and ``deletes`` atomically locally, then send them to the changelog.

        A delete is a tombstone in the (compacted) changelog.
        """
        if not puts and not deletes:
            return
        batch = WriteBatch(raw_mode=True)
        for key in deletes:
            batch.delete(key)
        for key, value in (puts or {}).items():
            batch.put(key, value)
        self.db(partition).write(batch)
        send = self.table.send_changelog
        for key in deletes:
            send(partition, key, None)
        for key, value in (puts or {}).items():
            send(partition, key, value)

    def scan(
        self, partition: int, start: bytes, stop: bytes | None = None, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Items with ``start <= key < stop`` in key order (at most ``limit``)."""
        if limit is not None and limit <= 0:
            return
        it = self.db(partition).iter()
        try:
            it.seek(start)
            n = 0
            while it.valid():
                key = bytes(it.key())
                if stop is not None and key >= stop:
                    return
                yield key, bytes(it.value())
                n += 1
                if limit is not None and n >= limit:
                    return
                it.next()
        finally:
            # An open iterator pins the database (and its lock) — see libraries.md.
            del it
