"""How many more tasks a worker may start: its concurrency, shared by every queue it serves."""

from __future__ import annotations

import threading


class Slots:
    """A counter of free task slots that threads can wait on."""

    __slots__ = ("_cond", "_free", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"concurrency must be at least 1, got {size}")
        self.size = size
        self._free = size
        self._cond = threading.Condition()

    def free(self) -> int:
        return self._free

    def take(self, most: int) -> int:
        """Take up to ``most`` slots; returns how many were taken (maybe 0)."""
        with self._cond:
            n = min(most, self._free)
            self._free -= n
            return n

    def give(self, n: int = 1) -> None:
        with self._cond:
            self._free += n
            self._cond.notify_all()

    def wait_free(self, timeout: float) -> bool:
        """Wait until a slot is free (or ``timeout`` s); True if one is."""
        with self._cond:
            if self._free > 0:
                return True
            return self._cond.wait_for(lambda: self._free > 0, timeout)

    def in_use(self) -> int:
        return self.size - self._free
