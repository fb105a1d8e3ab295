"""What the task service keeps per partition, and how it lays it out in RocksDB.

Layout of a partition's database (keys are bytes; ``|`` is concatenation):

``t | task id`` → :class:`TaskRecord` (JSON)
    one attempt's lifecycle: state, lease owner, times, deadline, outcome;
``h | ["tenant", "run id", "step", "idempotency key"]`` → :class:`History` (JSON)
    the finished attempts of one step visit, for the DLQ entry — kept until
    the step visit is over (completed, failed for good, cancelled). Keyed by
    the run and step as well as the idempotency key: a step's
    ``idempotency_key`` expression may give several runs the same key, and
    their histories (and parked entries) must stay apart;
``d | deadline (8 bytes, big-endian ms) | task id`` → deadline kind
    the due-time index the deadline loop scans in order: the attempt's next
    timeout (``schedule_to_start``, ``start_to_close``, ``heartbeat``), or
    ``purge`` for a finished record whose retention is over.

A record has at most one ``d`` entry: the earliest of its deadlines.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

TASK = b"t"
HISTORY = b"h"
DUE = b"d"
_DUE_END = b"e"
_U64 = struct.Struct(">Q")

# Attempt states
DISPATCHED = "dispatched"
STARTED = "started"
COMPLETED = "completed"
FAILED = "failed"
TIMED_OUT = "timed_out"
CANCELLED = "cancelled"
LIVE = frozenset({DISPATCHED, STARTED})

# Deadline kinds (the first three are TimeoutTask's `timeout` values)
SCHEDULE_TO_START = "schedule_to_start"
START_TO_CLOSE = "start_to_close"
HEARTBEAT = "heartbeat"
PURGE = "purge"


def task_key(task_id: str) -> bytes:
    return TASK + task_id.encode()


def history_key(tenant: str, run_id: str, step: str, idempotency_key: str) -> bytes:
    """The key of one step visit's history (a JSON array: unambiguous whatever the parts hold)."""
    parts = [tenant, run_id, step, idempotency_key]
    return HISTORY + json.dumps(parts, separators=(",", ":"), ensure_ascii=False).encode()


def due_key(due: int, task_id: str) -> bytes:
    return DUE + _U64.pack(max(0, due)) + task_id.encode()


def due_range(until: int) -> tuple[bytes, bytes]:
    """Keys of deadlines at or before ``until``: ``[start, stop)``."""
    return DUE, DUE + _U64.pack(max(0, until) + 1)


def due_after(after: int) -> tuple[bytes, bytes]:
    """Keys of deadlines at or after ``after``."""
    return DUE + _U64.pack(max(0, after)), _DUE_END


def split_due_key(key: bytes) -> tuple[int, str]:
    return _U64.unpack_from(key, 1)[0], key[9:].decode()


@dataclass(slots=True)
class TaskRecord:
    """One task attempt as the task service tracks it."""

    task_id: str
    attempt: int
    state: str
    queue: str
    topic: str  # the dispatch topic (priority band)
    tenant: str
    run_id: str
    workflow_type: str
    step: str
    idempotency_key: str
    priority: int
    input: Any
    config: dict[str, Any]
    timeouts: dict[str, int]  # schedule_to_start_ms, start_to_close_ms, heartbeat_ms
    retry: dict[str, Any]  # the step's policy as TaskScheduled carries it
    partition: int  # the run's partition: results come back on it
    dispatched_at: int
    traceparent: str | None = None
    worker: str | None = None  # the lease owner: the first worker that said `started`
    started_at: int | None = None
    heartbeat_at: int | None = None
    progress: Any = None
    ended_at: int | None = None
    error: dict[str, Any] | None = None
    timeout: str | None = None  # which timeout ended it
    deadline: int | None = None
    deadline_kind: str | None = None
    parked: bool = False  # dead-lettered, and the run waits for a redrive: never purged

    @property
    def live(self) -> bool:
        return self.state in LIVE

    @property
    def history_key(self) -> bytes:
        """The key of its step visit's :class:`History`."""
        return history_key(self.tenant, self.run_id, self.step, self.idempotency_key)

    def next_deadline(self) -> tuple[int, str] | None:
        """The attempt's earliest timeout from its current state (None: it has none)."""
        t = self.timeouts
        if self.state == DISPATCHED:
            s2s = t.get("schedule_to_start_ms")
            return None if s2s is None else (self.dispatched_at + s2s, SCHEDULE_TO_START)
        if self.state != STARTED:
            return None
        options = []
        s2c = t.get("start_to_close_ms")
        if s2c is not None and self.started_at is not None:
            options.append((self.started_at + s2c, START_TO_CLOSE))
        hb = t.get("heartbeat_ms")
        if hb is not None:
            options.append(((self.heartbeat_at or self.started_at or 0) + hb, HEARTBEAT))
        return min(options) if options else None

    def summary(self) -> dict[str, Any]:
        """The attempt as the DLQ's attempt history shows it."""
        out: dict[str, Any] = {
            "task_id": self.task_id,
            "attempt": self.attempt,
            "outcome": self.state,
            "worker": self.worker,
            "dispatched_at": self.dispatched_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }
        if self.error is not None:
            out["error"] = self.error
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.progress is not None:
            out["progress"] = self.progress
        return out

    def to_bytes(self) -> bytes:
        return json.dumps(
            [getattr(self, name) for name in _FIELDS], separators=(",", ":"), ensure_ascii=False
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> TaskRecord:
        return cls(*json.loads(raw))


_FIELDS = tuple(TaskRecord.__dataclass_fields__)


@dataclass(slots=True)
class History:
    """The ended attempts of one step visit, and whether it waits in the DLQ."""

    attempts: list[dict[str, Any]] = field(default_factory=list)
    parked: str | None = None  # DLQ entry id while the step waits for a redrive

    def to_bytes(self) -> bytes:
        return json.dumps(
            {"attempts": self.attempts, "parked": self.parked},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> History:
        data = json.loads(raw)
        return cls(list(data.get("attempts") or []), data.get("parked"))
