"""A :class:`PartitionStore` whose changelog goes out through librdkafka in awaited batches.

faust sends changelog records through its aiokafka producer, one future and
callback per record; measured in the timer service, that capped arming at
about 2,000 timers a second ("producer buffer full"). This store keeps the
local RocksDB write of :class:`PartitionStore` but queues the changelog
records, and :meth:`flush` produces them with the service's
:class:`~headrace.streams.producer.AsyncProducer` (idempotent, ``acks=all``)
and awaits them. A service flushes before it lets faust acknowledge a batch,
so an offset is never committed past state that is only on local disk.

After the acknowledgement the store records each partition's last changelog
offset in the partition's database, as faust's own ``_on_changelog_sent``
does (``Store.set_persisted_offset``), so recovery on restart reads only the
changelog records written after it. All writes to the table must go through
here, so its changelog has a single producer and keeps per-partition order.
Used by the timer service (its wheel) and the task service (task lifecycles).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from faust.types import TP
from rocksdict import WriteBatch

from headrace.core.outbox import Outgoing
from headrace.streams.partition_store import PartitionStore
from headrace.streams.producer import AsyncProducer


class BatchedChangelogStore(PartitionStore):
    """A :class:`PartitionStore` whose changelog goes out in awaited batches."""

    def __init__(self, table: object) -> None:
        super().__init__(table)
        self.pending: list[Outgoing] = []
        self._sending: set[asyncio.Future[None]] = set()
        self._persisted: dict[int, int] = {}

    @property
    def changelog_topic(self) -> str:
        return str(self.table.changelog_topic.get_topic_name())

    def write(
        self,
        partition: int,
        puts: Mapping[bytes, bytes] | None = None,
        deletes: list[bytes] | tuple[bytes, ...] = (),
    ) -> None:
        """Apply ``puts`` and ``deletes`` atomically to RocksDB; queue their changelog records."""
        if not puts and not deletes:
            return
        self._write_local(partition, puts, deletes)
        self.pending.extend(self.changelog_records(partition, puts, deletes))

    def _write_local(
        self,
        partition: int,
        puts: Mapping[bytes, bytes] | None,
        deletes: list[bytes] | tuple[bytes, ...],
    ) -> None:
        batch = WriteBatch(raw_mode=True)
        for key in deletes:
            batch.delete(key)
        for key, value in (puts or {}).items():
            batch.put(key, value)
        self.db(partition).write(batch)

    # -- changelog first, local write after the acknowledgement ---------------------
    #
    # `write` changes RocksDB at once and the changelog later: a worker killed in
    # between restarts with local state the changelog lacks, which the next
    # owner of the partition would not have. A service that wants the changelog
    # to lead takes a write's records with `changelog_records`, produces them,
    # and applies the write with `write_acked` once Kafka has acknowledged them;
    # recovery replays records acknowledged but not yet applied. Produce the
    # batch's outputs *before* its changelog records, never in the same produce:
    # a produce is not atomic across partitions, and state saying "sent" must not
    # survive a crash that lost what was sent. Writes must not also go through
    # `write` meanwhile (one changelog order per partition).

    def changelog_records(
        self,
        partition: int,
        puts: Mapping[bytes, bytes] | None = None,
        deletes: list[bytes] | tuple[bytes, ...] = (),
    ) -> list[Outgoing]:
        """The changelog records of a write of ``puts`` and ``deletes`` to ``partition``."""
        topic = self.changelog_topic
        out = [Outgoing(topic, None, key, partition) for key in deletes]
        out.extend(Outgoing(topic, value, key, partition) for key, value in (puts or {}).items())
        return out

    def write_acked(
        self,
        partition: int,
        puts: Mapping[bytes, bytes] | None,
        deletes: list[bytes] | tuple[bytes, ...],
        records: list[Outgoing],
        offsets: list[int],
    ) -> None:
        """Apply a write whose changelog ``records`` Kafka acknowledged at ``offsets``."""
        if puts or deletes:
            self._write_local(partition, puts, deletes)
        self._persist(records, offsets)

    async def flush(self, producer: AsyncProducer, also: list[Outgoing] | None = None) -> None:
        """Produce the queued changelog records (and ``also``); return once they, and every
        record queued before this call (some may be in flight for another caller), are acked."""
        records, self.pending = self.pending, []
        messages = records + (also or [])
        if messages:
            task = asyncio.ensure_future(self._send(producer, records, messages))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        waiting = list(self._sending)
        if waiting:
            await asyncio.gather(*waiting)

    async def _send(
        self, producer: AsyncProducer, records: list[Outgoing], messages: list[Outgoing]
    ) -> None:
        try:
            offsets = await producer.send(messages)
        except BaseException:
            self.pending[:0] = records  # sent again by the next flush
            raise
        self._persist(records, offsets)

    def _persist(self, records: list[Outgoing], offsets: list[int]) -> None:
        """Record the last acknowledged changelog offset of each partition in ``records``."""
        last: dict[int, int] = {}
        for m, off in zip(records, offsets, strict=False):
            assert m.partition is not None
            if off > last.get(m.partition, -1):
                last[m.partition] = off
        topic = self.changelog_topic
        for p, off in last.items():
            # Batches can be acked out of order; the persisted offset never goes back.
            if off > self._persisted.get(p, -1):
                self._persisted[p] = off
                self.table.data.set_persisted_offset(TP(topic, p), off)
