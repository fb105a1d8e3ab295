"""The wheel's table store: the batched-changelog store shared with the task service.

See :class:`headrace.streams.batched_store.BatchedChangelogStore`: RocksDB
writes are local at once, their changelog records go out in awaited batches,
and the arm agent flushes before it lets faust acknowledge a batch, so an
offset is never committed past a timer that is only on local disk.
"""

from __future__ import annotations

from headrace.streams.batched_store import BatchedChangelogStore


class WheelStore(BatchedChangelogStore):
    """The timer wheel's :class:`BatchedChangelogStore`."""
