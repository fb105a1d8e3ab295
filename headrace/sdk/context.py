"""What a task handler knows about the attempt it works on, and how it reports progress."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from headrace.core.task_codec import TaskDispatch


class TaskContext:
    """The attempt a handler works on: identity, limits, and a ``heartbeat``.

    * ``idempotency_key`` — the same on every delivery and every retry of this
      step visit; pass it to the external system so it applies the effect once.
    * ``attempt`` — 1 for the first attempt; ``last_attempt`` says whether the
      retry policy allows another.
    * ``deadline`` — epoch ms by which the attempt must end (start-to-close),
      or None; :meth:`time_left` is the same as seconds from now.
    * :meth:`heartbeat` — "still working", with optional progress details;
      the worker also heartbeats on its own while the handler runs.
    * ``cancelled`` — the task service took the attempt back (the run no longer
      wants it). Async handlers are cancelled; sync handlers should poll this.
    """

    __slots__ = (
        "_beat",
        "_cancelled",
        "_lock",
        "deadline",
        "dispatch",
        "last_beat_ms",
        "min_beat_gap_ms",
        "pending_progress",
        "started_ms",
        "worker",
    )

    def __init__(
        self,
        dispatch: TaskDispatch,
        worker: str,
        started_ms: int,
        beat: Callable[[TaskContext, Any], None],
        min_beat_gap_ms: int,
    ) -> None:
        self.dispatch = dispatch
        self.worker = worker
        self.started_ms = started_ms
        self.deadline: int | None = (
            started_ms + dispatch.start_to_close_ms if dispatch.start_to_close_ms else None
        )
        self._beat = beat
        self._lock = threading.Lock()
        self._cancelled = False
        self.last_beat_ms = started_ms
        self.min_beat_gap_ms = min_beat_gap_ms
        self.pending_progress: Any = None

    # -- identity --------------------------------------------------------------------

    @property
    def task_id(self) -> str:
        return self.dispatch.task_id

    @property
    def attempt(self) -> int:
        return self.dispatch.attempt

    @property
    def max_attempts(self) -> int | None:
        return self.dispatch.max_attempts

    @property
    def last_attempt(self) -> bool:
        return self.dispatch.last_attempt

    @property
    def idempotency_key(self) -> str:
        return self.dispatch.idempotency_key

    @property
    def run_id(self) -> str:
        return self.dispatch.run_id

    @property
    def tenant(self) -> str:
        return self.dispatch.tenant

    @property
    def workflow_type(self) -> str:
        return self.dispatch.workflow_type

    @property
    def step(self) -> str:
        return self.dispatch.step

    @property
    def queue(self) -> str:
        return self.dispatch.queue

    @property
    def config(self) -> dict[str, Any]:
        """The step's ``config`` (connector settings); ``{}`` when it has none."""
        return self.dispatch.config

    @property
    def traceparent(self) -> str | None:
        return self.dispatch.traceparent

    def time_left(self) -> float | None:
        """Seconds until the start-to-close deadline (negative once past), or None."""
        if self.deadline is None:
            return None
        return (self.deadline - time.time_ns() // 1_000_000) / 1000.0

    # -- progress and cancellation ---------------------------------------------------

    def heartbeat(self, details: Any = None) -> None:
        """Tell the task service the attempt is alive; ``details`` is JSON progress.

        Safe from any thread. Beats closer together than a fraction of the
        heartbeat timeout are merged: the latest details ride the next beat.
        """
        now = time.time_ns() // 1_000_000
        with self._lock:
            if details is not None:
                self.pending_progress = details
            if now - self.last_beat_ms < self.min_beat_gap_ms:
                return
            self.last_beat_ms = now
            progress, self.pending_progress = self.pending_progress, None
        self._beat(self, progress)

    def auto_beat(self, now: int) -> None:
        """The worker's own beat (with any details not yet sent)."""
        with self._lock:
            self.last_beat_ms = now
            progress, self.pending_progress = self.pending_progress, None
        self._beat(self, progress)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True

    def __repr__(self) -> str:
        return f"TaskContext({self.dispatch.step!r} task={self.task_id} attempt={self.attempt})"
