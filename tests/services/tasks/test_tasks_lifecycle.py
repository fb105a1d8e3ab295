"""The task lifecycle's decisions over a real RocksDB: requests, results, deadlines, the DLQ."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from rocksdict import Options, Rdict, WriteBatch

from headrace.core.envelope import CommandType
from headrace.core.task_codec import DispatchKind, ResultKind, TaskError, TaskResult
from headrace.services.tasks.lifecycle import Lifecycle, Outbox, View
from headrace.services.tasks.records import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PURGE,
    STARTED,
    TIMED_OUT,
    due_range,
    history_key,
    split_due_key,
)
from headrace.topology import Topics

C = CommandType
T0 = 1_000_000
RETAIN = 60_000


class RocksStore:
    """One partition in a real rocksdict database, with the PartitionStore interface."""

    def __init__(self, path: Path) -> None:
        self.db = Rdict(str(path), Options(raw_mode=True))

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
        for k, v in (puts or {}).items():
            batch.put(k, v)
        self.db.write(batch)

    def scan(self, start: bytes, stop: bytes) -> list[tuple[bytes, bytes]]:
        it = self.db.iter()
        it.seek(start)
        out = []
        while it.valid() and bytes(it.key()) < stop:
            out.append((bytes(it.key()), bytes(it.value())))
            it.next()
        return out


class Tasks:
    """The lifecycle over one partition; each call is a committed batch."""

    def __init__(self, store: RocksStore) -> None:
        self.store = store
        self.life = Lifecycle(Topics("hr."), RETAIN)
        self.out = Outbox()
        self.n = 0

    def _batch(self, fn: Any, *args: Any, now: int) -> Any:
        view = View(self.store, 3)
        self.out = Outbox()
        value = fn(view, *args, now, self.out)
        view.commit()
        return value

    def schedule(self, task_id: str = "r1:3", now: int = T0, **kw: Any) -> Outbox:
        req = {
            "op": "schedule",
            "task_id": task_id,
            "tenant": "acme",
            "run_id": kw.pop("run_id", "r1"),
            "workflow_type": "order",
            "step": "charge",
            "attempt": kw.pop("attempt", 1),
            "queue": "pay",
            "input": {"amount": 5},
            "priority": kw.pop("priority", 5),
            "timeouts": kw.pop(
                "timeouts",
                {"schedule_to_start_ms": 1000, "start_to_close_ms": 5000, "heartbeat_ms": 2000},
            ),
            "retry": {"max_attempts": 2, "non_retryable": ["bad"], **kw.pop("retry", {})},
            "idempotency_key": kw.pop("idempotency_key", "r1/charge"),
            "config": {},
            **kw,
        }
        self._batch(self.life.schedule, req, now=now)
        return self.out

    def cancel(self, task_id: str = "r1:3", now: int = T0) -> Outbox:
        req = {"op": "cancel", "task_id": task_id, "tenant": "acme", "run_id": "r1"}
        self._batch(self.life.cancel, req, now=now)
        return self.out

    def result(
        self, kind: ResultKind, task_id: str = "r1:3", attempt: int = 1, now: int = T0, **kw: Any
    ) -> str | None:
        r = TaskResult(task_id, attempt, kind, kw.pop("worker", "w1"), now, **kw)
        reason: str | None = self._batch(self.life.result, r, now=now)
        return reason

    def fail(self, task_id: str = "r1:3", attempt: int = 1, code: str = "boom", **kw: Any) -> Any:
        err = TaskError(code, "no", kw.pop("retryable", True))
        return self.result(ResultKind.FAILED, task_id, attempt, error=err, **kw)

    def due(self, until: int) -> list[tuple[int, str, str]]:
        return [(*split_due_key(k), v.decode()) for k, v in self.store.scan(*due_range(until))]

    def fire(self, now: int) -> Outbox:
        """One deadline round at ``now``."""
        view = View(self.store, 3)
        out = Outbox()
        for due, task_id, _ in self.due(now):
            self.life.deadline(view, task_id, due, now, out)
        view.commit()
        self.out = out
        return out

    def record(self, task_id: str = "r1:3") -> Any:
        return View(self.store, 3).task(task_id)

    def history(self, run_id: str = "r1", key: str = "r1/charge") -> Any:
        raw = self.store.get(3, history_key("acme", run_id, "charge", key))
        return None if raw is None else json.loads(raw)


@pytest.fixture
def tasks(tmp_path: Path) -> Iterator[Tasks]:
    store = RocksStore(tmp_path / "db")
    yield Tasks(store)
    store.db.close()


def commands(out: Outbox) -> list[tuple[CommandType, dict[str, Any]]]:
    return [(c.type, c.payload) for c in out.commands]


def test_schedule_dispatches_to_the_band_topic_with_the_results_address(tasks: Tasks) -> None:
    out = tasks.schedule(priority=8)
    (d,) = out.dispatches
    assert out.dispatch_topics == ["hr.tasks.pay.p8"] and out.queues == {"pay"}
    assert d.kind is DispatchKind.DISPATCH and d.idempotency_key == "r1/charge"
    assert (d.result_topic, d.result_key, d.result_partition) == ("hr.task-results", "acme/r1", 3)
    assert (d.schedule_to_start_ms, d.start_to_close_ms, d.heartbeat_ms) == (1000, 5000, 2000)
    assert d.max_attempts == 2 and d.dispatched_at == T0 and d.input == {"amount": 5}
    assert tasks.due(T0 + 10**9) == [(T0 + 1000, "r1:3", "schedule_to_start")]
    assert not out.commands


def test_a_replayed_schedule_is_not_dispatched_again(tasks: Tasks) -> None:
    tasks.schedule()
    assert not tasks.schedule(now=T0 + 5)
    assert tasks.schedule(priority=2).dispatch_topics == []


def test_started_takes_the_lease_and_moves_the_deadline(tasks: Tasks) -> None:
    tasks.schedule()
    assert tasks.result(ResultKind.STARTED, now=T0 + 100) is None
    assert commands(tasks.out) == [
        (C.TaskStarted, {"task_id": "r1:3", "attempt": 1, "worker": "w1"})
    ]
    rec = tasks.record()
    assert (rec.state, rec.worker, rec.started_at) == (STARTED, "w1", T0 + 100)
    assert tasks.due(T0 + 10**9) == [(T0 + 2100, "r1:3", "heartbeat")]
    # the dispatch delivered again to another worker: logged, lease unchanged, no command
    assert tasks.result(ResultKind.STARTED, worker="w2", now=T0 + 200) is None
    assert not tasks.out.commands and tasks.record().worker == "w1"


def test_heartbeats_extend_the_lease_up_to_start_to_close(tasks: Tasks) -> None:
    tasks.schedule()
    tasks.result(ResultKind.STARTED, now=T0)
    tasks.result(ResultKind.HEARTBEAT, now=T0 + 1500, progress={"done": 0.5})
    assert tasks.due(T0 + 10**9) == [(T0 + 3500, "r1:3", "heartbeat")]
    tasks.result(ResultKind.HEARTBEAT, now=T0 + 3400)
    assert tasks.due(T0 + 10**9) == [(T0 + 5000, "r1:3", "start_to_close")]
    assert tasks.record().progress == {"done": 0.5}
    assert not tasks.out.commands


def test_a_heartbeat_before_started_starts_the_attempt(tasks: Tasks) -> None:
    tasks.schedule()
    tasks.result(ResultKind.HEARTBEAT, now=T0 + 10)
    assert [t for t, _ in commands(tasks.out)] == [C.TaskStarted]
    assert tasks.record().state == STARTED


def test_completed_sends_complete_task_and_forgets_the_step_later(tasks: Tasks) -> None:
    tasks.schedule()
    tasks.fail(now=T0 + 50)  # attempt 1 fails first: the history has it
    assert tasks.history()["attempts"][0]["outcome"] == FAILED
    tasks.schedule("r1:9", attempt=2, now=T0 + 100)
    tasks.result(ResultKind.COMPLETED, "r1:9", 2, now=T0 + 200, output={"ok": True})
    assert commands(tasks.out) == [
        (C.CompleteTask, {"task_id": "r1:9", "attempt": 2, "result": {"ok": True}})
    ]
    assert tasks.record("r1:9").state == COMPLETED and tasks.history() is None
    assert (T0 + 200 + RETAIN, "r1:9", PURGE) in tasks.due(T0 + 10**9)
    tasks.fire(T0 + 200 + RETAIN)
    assert tasks.record("r1:9") is None


def test_stale_results_are_ignored_with_their_reason(tasks: Tasks) -> None:
    assert tasks.result(ResultKind.COMPLETED, "nope:1") == "unknown"
    tasks.schedule()
    assert tasks.result(ResultKind.COMPLETED, attempt=2) == "attempt"
    tasks.result(ResultKind.COMPLETED, now=T0 + 1)
    assert tasks.result(ResultKind.COMPLETED, now=T0 + 2) == "finished"
    assert tasks.fail(now=T0 + 3) == "finished"
    assert not tasks.out.commands


def test_a_retryable_failure_that_is_not_the_last_only_fails_the_attempt(tasks: Tasks) -> None:
    tasks.schedule()
    tasks.fail(code="busy")
    (fail,) = commands(tasks.out)
    assert fail[0] is C.FailTask
    assert fail[1]["error"] == {"code": "busy", "message": "no", "retryable": True}
    assert not tasks.out.dlq


def test_the_last_failure_dead_letters_the_task_with_its_history(tasks: Tasks) -> None:
    tasks.schedule()
    tasks.fail(code="busy", now=T0 + 10)
    tasks.schedule("r1:9", attempt=2, now=T0 + 20)
    tasks.result(ResultKind.STARTED, "r1:9", 2, worker="w7", now=T0 + 30)
    tasks.fail("r1:9", 2, code="busy", worker="w7", now=T0 + 40)
    (letter,) = tasks.out.dlq
    assert letter.topic == "hr.tasks.pay.dlq" and letter.key == "r1:9"
    entry = json.loads(letter.value or b"")
    assert (entry["status"], entry["reason"], entry["parked"]) == ("dead", "exhausted", False)
    assert [(a["task_id"], a["worker"], a["outcome"]) for a in entry["attempts"]] == [
        ("r1:3", "w1", FAILED),
        ("r1:9", "w7", FAILED),
    ]
    assert entry["attempts"][1]["started_at"] == T0 + 30
    assert tasks.history() is None  # the step failed for good


def test_a_non_retryable_error_dead_letters_at_once_even_under_park(tasks: Tasks) -> None:
    tasks.schedule(retry={"on_exhausted": "park"})
    tasks.fail(code="bad")
    entry = json.loads(tasks.out.dlq[0].value or b"")
    assert entry["reason"] == "non_retryable" and entry["parked"] is False


def test_a_parked_task_stays_until_redriven_then_is_marked_redriven(tasks: Tasks) -> None:
    tasks.schedule(retry={"max_attempts": 1, "on_exhausted": "park"})
    tasks.fail()
    assert json.loads(tasks.out.dlq[0].value or b"")["parked"] is True
    assert tasks.record().parked and tasks.due(T0 + 10**12) == []  # never purged while parked
    assert tasks.history()["parked"] == "r1:3"
    tasks.schedule("r1:20", attempt=1, now=T0 + 500, retry={"on_exhausted": "park"})
    (redriven,) = tasks.out.dlq
    assert json.loads(redriven.value or b"") == {
        "status": "redriven",
        "id": "r1:3",
        "queue": "pay",
        "time": T0 + 500,
    }
    assert not tasks.record().parked and tasks.history()["parked"] is None
    assert len(tasks.history()["attempts"]) == 1  # the history goes on across the redrive


def test_cancel_stops_a_live_attempt_and_closes_a_parked_one(tasks: Tasks) -> None:
    tasks.schedule()
    out = tasks.cancel(now=T0 + 5)
    assert [d.kind for d in out.dispatches] == [DispatchKind.CANCEL]
    assert tasks.record().state == CANCELLED
    assert tasks.result(ResultKind.COMPLETED, now=T0 + 6) == "finished"
    tasks.schedule("r1:7", retry={"max_attempts": 1, "on_exhausted": "park"})
    tasks.fail("r1:7")
    out = tasks.cancel("r1:7", now=T0 + 9)
    assert json.loads(out.dlq[0].value or b"")["status"] == "closed"
    assert tasks.history() is None and not tasks.record("r1:7").parked
    assert not tasks.cancel("r1:7")  # again: nothing


def test_deadlines_time_attempts_out_in_order(tasks: Tasks) -> None:
    tasks.schedule()
    assert not tasks.fire(T0 + 999)
    out = tasks.fire(T0 + 1000)
    assert commands(out) == [
        (C.TimeoutTask, {"task_id": "r1:3", "attempt": 1, "timeout": "schedule_to_start"})
    ]
    assert out.commands[0].command_id == "r1:3/timeout.schedule_to_start"
    rec = tasks.record()
    assert (rec.state, rec.timeout) == (TIMED_OUT, "schedule_to_start")
    assert tasks.history()["attempts"][0]["outcome"] == TIMED_OUT
    assert tasks.result(ResultKind.STARTED, now=T0 + 1001) == "finished"
    tasks.schedule("r1:9", attempt=2, now=T0 + 2000)
    tasks.result(ResultKind.STARTED, "r1:9", 2, now=T0 + 2000)
    out = tasks.fire(T0 + 4000)
    assert [p["timeout"] for _, p in commands(out)] == ["heartbeat"]
    entry = json.loads(out.dlq[0].value or b"")  # the second of two attempts: exhausted
    assert entry["error"]["code"] == "timeout" and len(entry["attempts"]) == 2


def test_runs_sharing_a_custom_idempotency_key_keep_their_histories_apart(tasks: Tasks) -> None:
    # Two runs whose step sets `idempotency_key: .order_id` to the same value.
    park = {"max_attempts": 1, "on_exhausted": "park"}
    tasks.schedule("a:3", run_id="run-a", idempotency_key="order-7", retry=park)
    tasks.fail("a:3")
    assert json.loads(tasks.out.dlq[0].value or b"")["parked"] is True
    assert tasks.history("run-a", "order-7")["parked"] == "a:3"

    out = tasks.schedule("b:3", run_id="run-b", idempotency_key="order-7", retry=park)
    assert out.dlq == []  # run B's first attempt is no redrive of run A's parked task
    assert tasks.record("a:3").parked and tasks.history("run-a", "order-7")["parked"] == "a:3"
    assert tasks.history("run-b", "order-7") is None

    tasks.fail("b:3")  # run B's history holds run B's attempts only
    entry = json.loads(tasks.out.dlq[0].value or b"")
    assert [a["task_id"] for a in entry["attempts"]] == ["b:3"]
    tasks.result(ResultKind.COMPLETED, "b:3")  # stale (finished): changes nothing
    tasks.schedule("a:9", run_id="run-a", idempotency_key="order-7", retry=park)
    (redriven,) = tasks.out.dlq  # run A's redrive finds its own parked entry
    assert json.loads(redriven.value or b"")["id"] == "a:3"
    assert tasks.record("b:3").parked


def test_the_request_traceparent_reaches_the_dispatch_and_the_commands(tasks: Tasks) -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    (d,) = tasks.schedule(traceparent=tp).dispatches
    assert d.traceparent == tp
    tasks.result(ResultKind.STARTED)
    assert [c.traceparent for c in tasks.out.commands] == [tp]
