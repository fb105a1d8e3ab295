"""The run summary view, folded from events the real decider emits."""

from __future__ import annotations

from decider_kit import Run, definition, task

from headrace.core.envelope import CommandType, EventType
from headrace.core.simulate import EPOCH
from headrace.core.views import RunViews, fold_run, new_run, run_document, run_row, summarize

C = CommandType
E = EventType


def views(run: Run) -> RunViews:
    return RunViews().fold_all(run.events)


def test_a_completed_run_has_its_outcome_timing_and_data() -> None:
    run = Run(definition(task("a", into="pay"), task("b")), input={"order": 7})
    run.at(1_000).complete("a", {"ok": True})
    run.at(5_000).complete("b", {"extra": 1})
    v = views(run).run
    assert v is not None
    assert (v["tenant"], v["run_id"], v["type"], v["version"]) == ("t1", "r1", "t", 1)
    assert v["status"] == "completed"
    assert v["input"] == {"order": 7}
    assert v["data"] == {"order": 7, "pay": {"ok": True}, "extra": 1}
    assert v["output"] == v["data"] and v["error"] is None
    assert (v["started_at"], v["ended_at"], v["updated_at"]) == (
        EPOCH,
        EPOCH + 5_000,
        EPOCH + 5_000,
    )
    assert v["active_steps"] == {} and v["last_seq"] == len(run.events) == v["events"]


def test_active_steps_follow_the_run_and_close_samples() -> None:
    run = Run(definition(task("a"), task("b")))
    v = RunViews().fold_all(run.events)
    assert v.run is not None and [a["step"] for a in v.run["active_steps"].values()] == ["a"]
    run.at(2_500).complete("a")
    v.fold_all(run.last)
    assert [a["step"] for a in v.run["active_steps"].values()] == ["b"]
    (sample,) = v.samples
    assert sample["step"] == "a" and sample["duration_ms"] == 2_500
    assert sample["outcome"] == "completed" and sample["kind"] == "task"


def test_suspend_resume_and_their_actor_and_reason() -> None:
    run = Run(definition(task("a"), task("b")))
    run.at(10).send(C.SuspendRun, {"actor": "alice", "reason": "look"})
    v = views(run).run
    assert v is not None and v["status"] == "suspended"
    assert v["suspension"] == {"actor": "alice", "reason": "look", "at": EPOCH + 10}
    run.complete("a")  # held: recorded, nothing new starts
    run.at(20).send(C.ResumeRun, {"actor": "bob", "reason": "ok"})
    v = views(run).run
    assert v is not None and v["status"] == "running" and v["suspension"] is None
    assert [(c["op"], c["actor"], c["reason"]) for c in v["control"]] == [
        ("suspend", "alice", "look"),
        ("resume", "bob", "ok"),
    ]
    assert [a["step"] for a in v["active_steps"].values()] == ["b"]


def test_cancel_with_compensation_goes_through_compensating_to_cancelled() -> None:
    defn = definition(
        task("a", compensate="undo_a"),
        task("b"),
        compensations=[task("undo_a")],
    )
    run = Run(defn)
    run.complete("a")
    run.send(C.CancelRun, {"actor": "ops", "reason": "customer"})
    mid = views(run).run
    assert mid is not None and mid["status"] == "compensating"
    assert mid["cancel"]["actor"] == "ops"
    assert [a["step"] for a in mid["active_steps"].values()] == ["undo_a"]
    run.complete("undo_a")
    end = views(run).run
    assert end is not None and end["status"] == "cancelled"
    assert end["error"]["message"] == "customer" and end["active_steps"] == {}


def test_terminate_is_recorded_with_actor() -> None:
    run = Run(definition(task("a")))
    run.send(C.TerminateRun, {"actor": "ops", "reason": "stuck"})
    v = views(run).run
    assert v is not None and v["status"] == "terminated" and v["ended_at"] is not None
    assert v["control"][-1]["op"] == "terminate" and v["control"][-1]["actor"] == "ops"


def test_children_are_tracked_by_the_parent_and_the_parent_by_the_child() -> None:
    defn = definition(
        {"name": "kyc", "kind": "call", "workflow": "kyc", "into": "kyc"},
        {"name": "side", "kind": "spawn", "workflow": "audit"},
    )
    run = Run(defn)
    child = run.id_of(E.ChildStartRequested, "child_run_id")
    run.send(C.ChildStarted, {"child_run_id": child, "version": 3})
    v = views(run).run
    assert v is not None and v["children"][child]["status"] == "started"
    assert v["children"][child]["version"] == 3
    run.send(C.ChildFinished, {"child_run_id": child, "status": "completed", "output": {"ok": 1}})
    v = views(run).run
    assert v is not None and v["status"] == "completed" and v["data"]["kyc"] == {"ok": 1}
    modes = {c["mode"]: c["status"] for c in v["children"].values()}
    assert modes == {"call": "completed", "spawn": "spawned"}
    doc = run_document(v)
    assert {c["run_id"] for c in doc["children"]} == set(v["children"])


def test_rows_leave_out_data_and_output() -> None:
    run = Run(definition(task("a")), input={"big": "x" * 100})
    v = views(run).run
    assert v is not None
    row = run_row(v)
    assert "data" not in row and "output" not in row and row["active_steps"] == ["a"]
    assert row["input"] == {"big": "x" * 100} and row["children"] == 0


def test_an_event_already_folded_changes_nothing() -> None:
    run = Run(definition(task("a"), task("b")))
    run.complete("a")
    view = new_run(run.events[0])
    for e in run.events:
        fold_run(view, e)
    before = dict(view)
    assert all(fold_run(view, e) is None for e in run.events)
    assert view == before


def test_summarize_gives_counts_and_nearest_rank_percentiles() -> None:
    samples = [{"duration_ms": d, "outcome": "completed"} for d in range(1, 101)]
    samples.append({"duration_ms": 500, "outcome": "failed", "breached": True})
    s = summarize(samples)
    assert (s["count"], s["completed"], s["failed"], s["breached"]) == (101, 100, 1, 1)
    assert (s["min_ms"], s["max_ms"], s["p50_ms"], s["p99_ms"]) == (1, 500, 51, 100)
    assert summarize([])["p50_ms"] is None
