"""The timer wheel's operations on a real RocksDB database (no Kafka: the store records
what it would send to the changelog)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from rocksdict import Options, Rdict, WriteBatch

from headrace.core.codec import decode_command, encode_command
from headrace.core.envelope import Command, CommandType
from headrace.services.timers.wheel import INDEX, Frozen, TimerRecord, Wheel


class RocksStore:
    """A one-database store with the PartitionStore interface; changelog records are kept."""

    def __init__(self, path: Path) -> None:
        self.db = Rdict(str(path), Options(raw_mode=True))
        self.changelog: list[tuple[bytes, bytes | None]] = []

    def get(self, partition: int, key: bytes) -> bytes | None:
        v = self.db.get(key)
        return None if v is None else bytes(v)

    def write(
        self,
        partition: int,
        puts: Mapping[bytes, bytes] | None = None,
        deletes: list[bytes] | tuple[bytes, ...] = (),
    ) -> None:
        batch = WriteBatch(raw_mode=True)
        for k in deletes:
            batch.delete(k)
            self.changelog.append((k, None))
        for k, v in (puts or {}).items():
            batch.put(k, v)
            self.changelog.append((k, v))
        self.db.write(batch)

    def scan(
        self, partition: int, start: bytes, stop: bytes | None = None, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        it = self.db.iter()
        it.seek(start)
        n = 0
        while it.valid() and (stop is None or bytes(it.key()) < stop):
            yield bytes(it.key()), bytes(it.value())
            n += 1
            if limit is not None and n >= limit:
                return
            it.next()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RocksStore]:
    s = RocksStore(tmp_path / "db")
    yield s
    s.db.close()


def record(timer_id: str, due: int) -> TimerRecord:
    cmd = Command(
        f"{timer_id}/fire", "acme", "r1", CommandType.FireTimer, due, {"timer_id": timer_id}
    )
    return TimerRecord("acme/r1", encode_command(cmd))


def apply(wheel: Wheel, op: str, *args: object, **kw: object) -> str:
    wb = wheel.batch(0)
    outcome = getattr(wb, op)(*args, **kw)
    wb.commit()
    return outcome


def keep(frozen: Frozen, at: int) -> int:
    return at + frozen.due - frozen.frozen_at


def test_due_timers_come_out_in_due_order(store: RocksStore) -> None:
    wheel = Wheel(store)
    for i, due in enumerate([5000, 1000, 3000, 2000]):
        apply(wheel, "arm", f"t{i}", due, record(f"t{i}", due))
    assert [d.timer_id for d in wheel.due(0, 3000, 10)] == ["t1", "t3", "t2"]
    assert [d.due for d in wheel.due(0, 10_000, 2)] == [1000, 2000]
    assert wheel.next_due(0, 3001) == 5000
    assert wheel.count_due(0, 10_000, 100) == 4


def test_arming_an_armed_id_changes_nothing_but_resends_it(store: RocksStore) -> None:
    wheel = Wheel(store)
    assert apply(wheel, "arm", "t", 1000, record("t", 1000)) == "armed"
    sent = len(store.changelog)
    assert apply(wheel, "arm", "t", 9000, record("t", 9000)) == "duplicate"
    assert [(d.timer_id, d.due) for d in wheel.due(0, 100_000, 10)] == [("t", 1000)]
    assert len(store.changelog) == sent + 2  # the same two keys, re-sent for the changelog


def test_cancel_removes_armed_and_frozen_timers(store: RocksStore) -> None:
    wheel = Wheel(store)
    apply(wheel, "arm", "a", 1000, record("a", 1000))
    apply(wheel, "arm", "b", 1000, record("b", 1000))
    apply(wheel, "freeze", "b", 500, "freeze", 7)
    assert apply(wheel, "cancel", "a") == "cancelled"
    assert apply(wheel, "cancel", "b") == "cancelled"
    assert apply(wheel, "cancel", "c") == "absent"
    assert wheel.due(0, 10_000, 10) == []
    assert list(store.scan(0, b"", None)) == []


def test_arm_then_cancel_in_one_batch(store: RocksStore) -> None:
    wheel = Wheel(store)
    wb = wheel.batch(0)
    wb.arm("t", 1000, record("t", 1000))
    wb.cancel("t")
    wb.commit()
    assert list(store.scan(0, b"", None)) == []


def test_freeze_keeps_the_remaining_time(store: RocksStore) -> None:
    wheel = Wheel(store)
    apply(wheel, "arm", "t", 10_000, record("t", 10_000))
    assert apply(wheel, "freeze", "t", 4_000, "freeze", 5) == "frozen"
    assert wheel.due(0, 100_000, 10) == []
    assert apply(wheel, "thaw", "t", 50_000, 6, keep) == "thawed"
    [d] = wheel.due(0, 100_000, 10)
    assert d.due == 56_000
    assert decode_command(d.record.command).time == 56_000


def test_catch_up_keeps_the_due_time(store: RocksStore) -> None:
    wheel = Wheel(store)
    apply(wheel, "arm", "t", 10_000, record("t", 10_000))
    apply(wheel, "freeze", "t", 4_000, "catch_up", 5)
    apply(wheel, "thaw", "t", 50_000, 6, keep)
    assert [d.due for d in wheel.due(0, 50_000, 10)] == [10_000]


def test_replayed_freeze_and_thaw_change_nothing(store: RocksStore) -> None:
    """The orchestrator's replay re-sends arm, freeze and thaw in order."""
    wheel = Wheel(store)
    apply(wheel, "arm", "t", 10_000, record("t", 10_000))
    apply(wheel, "freeze", "t", 4_000, "freeze", 5)
    apply(wheel, "thaw", "t", 50_000, 6, keep)
    assert apply(wheel, "arm", "t", 10_000, record("t", 10_000)) == "duplicate"
    assert apply(wheel, "freeze", "t", 4_000, "freeze", 5) == "stale"
    assert apply(wheel, "thaw", "t", 50_000, 6, keep) == "absent"
    assert [d.due for d in wheel.due(0, 100_000, 10)] == [56_000]


def test_reset_moves_a_timer_and_arms_an_unknown_one(store: RocksStore) -> None:
    wheel = Wheel(store)
    apply(wheel, "arm", "t", 10_000, record("t", 10_000))
    assert apply(wheel, "reset", "t", 20_000, 3) == "reset"
    assert apply(wheel, "reset", "t", 15_000, 2) == "stale"
    assert [d.due for d in wheel.due(0, 100_000, 10)] == [20_000]
    assert apply(wheel, "reset", "u", 30_000, None) == "absent"
    assert apply(wheel, "reset", "u", 30_000, None, record("u", 0)) == "armed"
    assert [d.timer_id for d in wheel.due(0, 100_000, 10)] == ["t", "u"]


def test_removing_fired_timers_spares_one_moved_meanwhile(store: RocksStore) -> None:
    wheel = Wheel(store)
    apply(wheel, "arm", "a", 1000, record("a", 1000))
    apply(wheel, "arm", "b", 1000, record("b", 1000))
    fired = wheel.due(0, 1000, 10)
    apply(wheel, "reset", "b", 9000, 1)  # while the fire round awaited its acks
    wheel.remove_fired(0, fired)
    assert [(d.timer_id, d.due) for d in wheel.due(0, 100_000, 10)] == [("b", 9000)]
    assert store.get(0, INDEX + b"b") is not None
    assert store.get(0, INDEX + b"a") is None


def test_records_and_frozen_entries_round_trip() -> None:
    r = TimerRecord("t/r", b"\x00avro", 42, "paris")
    assert TimerRecord.decode(r.encode()) == r
    f = Frozen(5, 9, "catch_up", r)
    assert Frozen.decode(f.encode()) == f
