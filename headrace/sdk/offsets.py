"""Which offset of a partition may be committed when tasks finish out of order.

A worker runs many dispatches of one partition at once and they finish in any
order, but Kafka keeps one committed offset per partition: everything below it
counts as done. So the committable offset is the lowest offset still in
progress (or one past the highest seen, when nothing is). A dispatch is *in
progress* from the moment it is fetched until its result is acknowledged by
Kafka; that is what makes delivery at-least-once — a crash redelivers every
dispatch whose result might not be on ``task-results``.
"""

from __future__ import annotations

import heapq
import threading


class PartitionOffsets:
    """Offsets of one assigned partition: fetched, finished, and the committable position.

    Thread-safe: the poller thread adds, the result producer's thread finishes.
    ``revoked`` is set when the partition leaves this consumer; later calls to
    :meth:`finish` are then ignored (the new owner redelivers what was pending).
    """

    __slots__ = ("_done", "_floor", "_lock", "_next", "_pending", "committed", "revoked")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[int] = []  # min-heap of offsets in progress
        self._done: set[int] = set()  # finished offsets still in the heap (lazy deletion)
        self._next: int | None = None  # one past the highest offset added
        self._floor: int | None = None  # lowest abandoned offset: commits never pass it
        self.committed: int | None = None  # last offset handed to a commit (maybe in flight)
        self.revoked = False

    def add(self, offset: int) -> None:
        with self._lock:
            heapq.heappush(self._pending, offset)
            if self._next is None or offset >= self._next:
                self._next = offset + 1

    def finish(self, offset: int) -> None:
        with self._lock:
            if self.revoked:
                return
            self._done.add(offset)
            while self._pending and self._pending[0] in self._done:
                self._done.discard(heapq.heappop(self._pending))

    def abandon(self, offset: int) -> None:
        """Give up on ``offset`` without finishing it (a worker that stops before starting it):
        it no longer counts as in progress, but commits stay below it so it is redelivered."""
        with self._lock:
            if self._floor is None or offset < self._floor:
                self._floor = offset
            self._done.add(offset)
            while self._pending and self._pending[0] in self._done:
                self._done.discard(heapq.heappop(self._pending))

    def position(self) -> int | None:
        """The offset to commit: the lowest in progress, else one past the highest added."""
        with self._lock:
            pos = self._pending[0] if self._pending else self._next
            if self._floor is not None and pos is not None and self._floor < pos:
                return self._floor
            return pos

    def in_progress(self) -> int:
        with self._lock:
            return len(self._pending) - len(self._done)

    def to_commit(self) -> int | None:
        """The position, if it moved since the last commit handed out (and marks it handed out).

        For the periodic asynchronous commit: a position whose commit is in flight
        is not committed again, unless :meth:`commit_failed` says it did not land.
        """
        pos = self.position()
        if pos is None or pos == self.committed:
            return None
        self.committed = pos
        return pos

    def to_commit_now(self) -> int | None:
        """The position, moved or not (and marks it handed out).

        For the last, synchronous commit before the partition leaves: whether an
        earlier asynchronous commit of the same position landed is not known yet,
        so it is committed again rather than trusted.
        """
        pos = self.position()
        if pos is not None:
            self.committed = pos
        return pos

    def commit_failed(self, offset: int) -> None:
        """The commit of ``offset`` did not land: the next :meth:`to_commit` hands it out again
        (unless a later position was handed out since, whose commit covers it)."""
        if self.committed == offset:
            self.committed = None
