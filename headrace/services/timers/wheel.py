"""The timer wheel of one partition: RocksDB keys ordered by due time, plus an index by id.

Layout of a partition's database (keys are bytes; ``|`` is concatenation):

``d | due (8 bytes, big-endian ms) | timer id`` → :class:`TimerRecord`
    armed timers, so a range scan from ``d`` yields them in due order;
``i | timer id`` → ``due`` (8 bytes)
    the index that finds an armed timer's ``d`` key to cancel, move or freeze it;
``z | timer id`` → ``frozen_at (8) | due (8) | policy (1) |`` :class:`TimerRecord`
    frozen timers (their run is suspended): not in due order, never fired.

Every change goes through :class:`WheelBatch`, which overlays the batch's
writes on the database and commits them as one RocksDB write plus changelog
records (:class:`~headrace.streams.partition_store.PartitionStore`).

Idempotency. Messages on ``timers`` are delivered at least once and the
orchestrator re-sends them when it replays a run, so each operation is safe
to apply twice: arming an id that is armed or frozen changes nothing; freeze,
thaw and reset carry the ``seq`` of the run event that asked for them and apply
only if it is newer than the last one applied to the timer. An operation found
already applied still re-sends the keys it would have written to the changelog:
a worker killed between its local RocksDB write and the changelog send would
otherwise hold a timer no other worker could restore.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from headrace.core.codec import decode_command, encode_command

ARMED = b"d"
INDEX = b"i"
FROZEN = b"z"
_ARMED_END = b"e"
_HEAD = struct.Struct(">BqH")
_LEN = struct.Struct(">H")
_FROZEN = struct.Struct(">qqB")
_U64 = struct.Struct(">Q")

POLICIES = ("freeze", "catch_up")  # keep the remaining time | keep the due time


class Store(Protocol):
    """What the wheel needs of a partition-addressed store (``PartitionStore``)."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...

    def write(
        self,
        partition: int,
        puts: dict[bytes, bytes] | None = None,
        deletes: list[bytes] | tuple[bytes, ...] = (),
    ) -> None: ...

    def scan(
        self, partition: int, start: bytes, stop: bytes | None = None, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]: ...


def due_bytes(due: int) -> bytes:
    return _U64.pack(max(0, due))


def armed_key(due: int, timer_id: str) -> bytes:
    return ARMED + due_bytes(due) + timer_id.encode()


def split_armed_key(key: bytes) -> tuple[int, str]:
    return _U64.unpack_from(key, 1)[0], key[9:].decode()


@dataclass(frozen=True, slots=True)
class TimerRecord:
    """What is stored for a timer: where and what to send, and what was last applied to it."""

    run_key: str
    command: bytes  # the Avro ``Command`` to produce, its ``time`` set to the due time
    seq: int = -1  # the run event seq of the last freeze/thaw/reset applied (-1: none)
    calendar: str = ""  # business time: the calendar its due time was resolved in

    def encode(self) -> bytes:
        rk, cal = self.run_key.encode(), self.calendar.encode()
        return b"".join(
            (_HEAD.pack(1, self.seq, len(rk)), rk, _LEN.pack(len(cal)), cal, self.command)
        )

    @classmethod
    def decode(cls, raw: bytes) -> TimerRecord:
        _, seq, n = _HEAD.unpack_from(raw)
        pos = _HEAD.size
        run_key = raw[pos : pos + n].decode()
        pos += n
        (m,) = _LEN.unpack_from(raw, pos)
        pos += _LEN.size
        calendar = raw[pos : pos + m].decode()
        return cls(run_key, raw[pos + m :], seq, calendar)

    def due_at(self, due: int, seq: int | None = None) -> TimerRecord:
        """This record with its command's ``time`` set to ``due`` (and ``seq`` if given)."""
        command = decode_command(self.command)
        moved = replace(command, time=due)
        return replace(self, command=encode_command(moved), seq=self.seq if seq is None else seq)


@dataclass(frozen=True, slots=True)
class Frozen:
    frozen_at: int
    due: int
    policy: str
    record: TimerRecord

    def encode(self) -> bytes:
        return (
            _FROZEN.pack(self.frozen_at, self.due, POLICIES.index(self.policy))
            + self.record.encode()
        )

    @classmethod
    def decode(cls, raw: bytes) -> Frozen:
        at, due, policy = _FROZEN.unpack_from(raw)
        return cls(at, due, POLICIES[policy], TimerRecord.decode(raw[_FROZEN.size :]))


@dataclass(frozen=True, slots=True)
class Due:
    """An armed timer that is due: its key and record."""

    key: bytes
    due: int
    timer_id: str
    record: TimerRecord


def _newer(seq: int | None, applied: int) -> bool | None:
    """Apply an op with ``seq``? True: yes; None: it is the op last applied; False: older."""
    if seq is None or applied < 0:
        return True
    if seq > applied:
        return True
    return None if seq == applied else False


class WheelBatch:
    """The changes of one batch to one partition's wheel, applied by :meth:`commit`."""

    def __init__(self, store: Store, partition: int) -> None:
        self.store = store
        self.partition = partition
        self.puts: dict[bytes, bytes] = {}
        self.deletes: dict[bytes, None] = {}
        self.earliest: int | None = None  # earliest due time armed by this batch

    def _get(self, key: bytes) -> bytes | None:
        if key in self.puts:
            return self.puts[key]
        if key in self.deletes:
            return None
        return self.store.get(self.partition, key)

    def _put(self, key: bytes, value: bytes) -> None:
        self.deletes.pop(key, None)
        self.puts[key] = value

    def _delete(self, key: bytes) -> None:
        self.puts.pop(key, None)
        self.deletes[key] = None

    def _place(self, timer_id: str, due: int, record: TimerRecord) -> None:
        self._put(armed_key(due, timer_id), record.encode())
        self._put(INDEX + timer_id.encode(), due_bytes(due))
        if self.earliest is None or due < self.earliest:
            self.earliest = due

    def _armed(self, timer_id: str) -> tuple[int, bytes, TimerRecord] | None:
        raw = self._get(INDEX + timer_id.encode())
        if raw is None:
            return None
        due = _U64.unpack(raw)[0]
        key = armed_key(due, timer_id)
        value = self._get(key)
        if value is None:  # an index without its timer: drop it
            self._delete(INDEX + timer_id.encode())
            return None
        return due, key, TimerRecord.decode(value)

    def _frozen(self, timer_id: str) -> Frozen | None:
        raw = self._get(FROZEN + timer_id.encode())
        return None if raw is None else Frozen.decode(raw)

    # -- operations (each returns what happened, for metrics) ------------------

    def arm(self, timer_id: str, due: int, record: TimerRecord) -> str:
        """Arm a new timer; ``"duplicate"`` if the id is armed or frozen already."""
        armed = self._armed(timer_id)
        if armed is not None:
            self._place(timer_id, armed[0], armed[2])  # heal the changelog (module docstring)
            return "duplicate"
        frozen = self._frozen(timer_id)
        if frozen is not None:
            self._put(FROZEN + timer_id.encode(), frozen.encode())
            return "duplicate"
        self._place(timer_id, due, record)
        return "armed"

    def cancel(self, timer_id: str) -> str:
        armed = self._armed(timer_id)
        frozen = self._frozen(timer_id)
        if armed is not None:
            self._delete(armed[1])
            self._delete(INDEX + timer_id.encode())
        if frozen is not None:
            self._delete(FROZEN + timer_id.encode())
        return "cancelled" if armed or frozen else "absent"

    def reset(
        self, timer_id: str, due: int, seq: int | None, record: TimerRecord | None = None
    ) -> str:
        """Move a timer to ``due`` (arming ``record`` if the id is unknown and one is given)."""
        armed = self._armed(timer_id)
        if armed is not None:
            old_due, key, current = armed
            newer = _newer(seq, current.seq)
            if not newer:
                if newer is None:
                    self._place(timer_id, old_due, current)
                return "stale"
            self._delete(key)
            base = record if record is not None else current
            self._place(timer_id, due, base.due_at(due, seq if seq is not None else current.seq))
            return "reset"
        frozen = self._frozen(timer_id)
        if frozen is not None:
            newer = _newer(seq, frozen.record.seq)
            if newer:
                rec = frozen.record if seq is None else replace(frozen.record, seq=seq)
                frozen = replace(frozen, due=due, record=rec)
            self._put(FROZEN + timer_id.encode(), frozen.encode())
            return "reset" if newer else "stale"
        if record is None:
            return "absent"
        self._place(timer_id, due, record.due_at(due, seq if seq is not None else -1))
        return "armed"

    def freeze(self, timer_id: str, at: int, policy: str, seq: int | None) -> str:
        """Take an armed timer out of the wheel, remembering when and how to bring it back."""
        if policy not in POLICIES:
            raise ValueError(f"freeze policy {policy!r} is not one of {', '.join(POLICIES)}")
        armed = self._armed(timer_id)
        if armed is None:
            frozen = self._frozen(timer_id)
            if frozen is not None and _newer(seq, frozen.record.seq) is None:
                self._put(FROZEN + timer_id.encode(), frozen.encode())
            return "absent"
        due, key, record = armed
        newer = _newer(seq, record.seq)
        if not newer:
            if newer is None:
                self._place(timer_id, due, record)
            return "stale"
        self._delete(key)
        self._delete(INDEX + timer_id.encode())
        rec = record if seq is None else replace(record, seq=seq)
        self._put(FROZEN + timer_id.encode(), Frozen(at, due, policy, rec).encode())
        return "frozen"

    def thaw(
        self,
        timer_id: str,
        at: int,
        seq: int | None,
        shift: Callable[[Frozen, int], int],
    ) -> str:
        """Put a frozen timer back; ``shift(frozen, at)`` gives its new due under policy freeze."""
        frozen = self._frozen(timer_id)
        if frozen is None:
            armed = self._armed(timer_id)
            if armed is not None and _newer(seq, armed[2].seq) is None:
                self._place(timer_id, armed[0], armed[2])
            return "absent"
        newer = _newer(seq, frozen.record.seq)
        if not newer:
            if newer is None:
                self._put(FROZEN + timer_id.encode(), frozen.encode())
            return "stale"
        due = frozen.due if frozen.policy == "catch_up" else shift(frozen, at)
        self._delete(FROZEN + timer_id.encode())
        self._place(timer_id, due, frozen.record.due_at(due, seq))
        return "thawed"

    def commit(self) -> None:
        self.store.write(self.partition, self.puts, list(self.deletes))
        self.puts, self.deletes = {}, {}


class Wheel:
    """Reads of the wheel: what is due, what comes next, removing what fired."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def batch(self, partition: int) -> WheelBatch:
        return WheelBatch(self.store, partition)

    def due(self, partition: int, now: int, limit: int, floor: int = 0) -> list[Due]:
        """Armed timers with ``floor <= due <= now``, earliest first, at most ``limit``."""
        out = []
        for key, value in self.store.scan(
            partition, armed_key(floor, ""), ARMED + due_bytes(now + 1), limit
        ):
            due, timer_id = split_armed_key(key)
            out.append(Due(key, due, timer_id, TimerRecord.decode(value)))
        return out

    def next_due(self, partition: int, after: int = 0) -> int | None:
        """Due time of the first armed timer at or after ``after``."""
        for key, _ in self.store.scan(partition, armed_key(after, ""), _ARMED_END, 1):
            return split_armed_key(key)[0]
        return None

    def count_due(self, partition: int, now: int, cap: int, floor: int = 0) -> int:
        return sum(
            1
            for _ in self.store.scan(
                partition, armed_key(floor, ""), ARMED + due_bytes(now + 1), cap
            )
        )

    def remove_fired(self, partition: int, fired: list[Due]) -> None:
        """Delete fired timers — unless one was moved meanwhile (its index names another due)."""
        deletes: list[bytes] = []
        for d in fired:
            deletes.append(d.key)
            index = INDEX + d.timer_id.encode()
            raw = self.store.get(partition, index)
            if raw is not None and _U64.unpack(raw)[0] == d.due:
                deletes.append(index)
        self.store.write(partition, None, deletes)
