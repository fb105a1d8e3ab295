"""catch routing, compensation (sagas), cancellation, termination, run timeout."""

from __future__ import annotations

from typing import Any

from decider_kit import Run, definition, of, one, simulate, task, types

from headrace.core.decider.effects import CancelChild, effects
from headrace.core.dsl.model import Definition
from headrace.core.envelope import CommandType, EventType

E = EventType


def _saga(**kw: Any) -> Definition:
    return definition(
        task("reserve", compensate="release", into="res"),
        task("charge", compensate="refund", into="pay"),
        task("ship"),
        compensations=[
            task("release", input="{r: .res}"),
            task("refund", input="{p: .pay}"),
        ],
        **kw,
    )


def test_catch_matches_exact_prefix_and_wildcard_codes() -> None:
    def caught(pattern: str, code: str) -> bool:
        defn = definition(
            task("a", retry={"max_attempts": 1}, catch=[{"errors": [pattern], "next": "ok"}]),
            {"name": "no", "kind": "fail", "error": "unreached"},
            {"name": "ok", "kind": "succeed"},
        )
        return (
            simulate(
                defn, {}, {"tasks": {"a": {"error": {"code": code, "retryable": False}}}}
            ).status
            == "completed"
        )

    assert caught("card.declined", "card.declined")
    assert caught("card.*", "card.declined")
    assert not caught("card.*", "cardinal")
    assert caught("*", "anything")
    assert not caught("other", "card.declined")


def test_catch_into_places_the_error_and_the_run_goes_on() -> None:
    defn = definition(
        task("a", catch=[{"errors": ["*"], "next": "b", "into": "err"}]),
        task("skipped"),
        task("b"),
    )
    sim = simulate(defn, {}, {"tasks": {"a": {"error": {"code": "x", "retryable": False}}}})
    assert sim.state.outcome["err"] == {"code": "x", "message": "x", "step": "a"}
    assert "skipped" not in [e.payload.get("step") for e in of(sim.events, E.StepStarted)]


def test_failure_compensates_completed_steps_in_reverse_order() -> None:
    sim = simulate(
        _saga(),
        {},
        {
            "tasks": {
                "reserve": {"result": {"id": "R"}},
                "charge": {"result": {"id": "P"}},
                "ship": {"error": {"code": "no.truck", "retryable": False}},
            }
        },
    )
    started = [e.payload["compensation"] for e in of(sim.events, E.CompensationStepStarted)]
    assert started == ["refund", "release"]
    inputs = {e.payload["step"]: e.payload["input"] for e in of(sim.events, E.TaskScheduled)}
    assert inputs["refund"] == {"p": {"id": "P"}} and inputs["release"] == {"r": {"id": "R"}}
    assert types(sim.events)[-2:] == ["CompensationCompleted", "RunFailed"]
    assert sim.state.outcome["code"] == "no.truck"


def test_a_failing_compensation_is_recorded_and_the_unwind_goes_on() -> None:
    sim = simulate(
        _saga(),
        {},
        {
            "tasks": {
                "ship": {"error": {"code": "x", "retryable": False}},
                "refund": {"error": {"code": "gone", "retryable": False}},
            }
        },
    )
    assert one(sim.events, E.CompensationStepFailed).payload["compensation"] == "refund"
    assert [e.payload["compensation"] for e in of(sim.events, E.CompensationStepStarted)] == [
        "refund",
        "release",
    ]
    assert types(sim.events)[-2:] == ["CompensationFailed", "RunFailed"]


def test_cancel_stops_work_compensates_and_cancels_the_run() -> None:
    run = Run(_saga())
    run.complete("reserve", {"id": "R"})
    pending_task = run.task_id("charge")
    run.send(CommandType.CancelRun, {"reason": "customer"})
    assert types(run.last)[:3] == ["RunCancelRequested", "TaskCancelled", "CompensationStarted"]
    assert one(run.last, E.TaskCancelled).payload["task_id"] == pending_task
    run.complete("release")
    assert run.state.status == "cancelled"
    assert run.state.outcome == {"code": "cancelled", "message": "customer"}
    assert run.send(CommandType.CompleteTask, {"task_id": pending_task, "result": {}}) == []


def test_on_cancel_none_skips_compensation() -> None:
    run = Run(_saga(on_cancel="none"))
    run.complete("reserve")
    run.send(CommandType.CancelRun, {})
    assert not of(run.last, E.CompensationStarted) and run.state.status == "cancelled"


def test_cancel_during_compensation_is_a_no_op_and_terminate_stops_it() -> None:
    run = Run(_saga())
    run.complete("reserve")
    run.send(CommandType.CancelRun, {})
    assert run.send(CommandType.CancelRun, {}) == []
    run.send(CommandType.TerminateRun, {"reason": "ops"})
    assert types(run.last) == ["TaskCancelled", "RunTerminated"]
    assert run.state.status == "terminated"


def test_cancel_cascades_to_call_children_but_not_abandoned_spawns() -> None:
    defn = definition(
        {"name": "sp", "kind": "spawn", "workflow": "side"},
        {"name": "sp2", "kind": "spawn", "workflow": "side", "on_parent_cancel": "cascade"},
        {"name": "c", "kind": "call", "workflow": "child"},
    )
    run = Run(defn)
    run.send(CommandType.CancelRun, {})
    cancelled = [eff for ev in run.last for eff in effects(ev) if isinstance(eff, CancelChild)]
    spawned = [e.payload["child_run_id"] for e in of(run.events, E.ChildSpawned)]
    called = one(run.events, E.ChildStartRequested).payload["child_run_id"]
    assert sorted(c.id for c in cancelled) == sorted([called, spawned[1]])


def test_run_timeout_fails_the_run_and_compensates() -> None:
    defn = definition(
        task("reserve", compensate="release"),
        {"name": "w", "kind": "wait", "duration": "3d"},
        timeout="1d",
        compensations=[task("release")],
    )
    sim = simulate(defn)
    assert one(sim.events, E.RunTimedOut)
    assert sim.state.outcome["code"] == "timeout"
    assert [e.payload["compensation"] for e in of(sim.events, E.CompensationStepStarted)] == [
        "release"
    ]
    done = simulate(definition(task("a"), timeout="1d"))
    assert done.status == "completed"
    assert one(done.events, E.TimerCancelled).payload["purpose"] == "run"


def test_fail_mode_cancels_running_branch_before_it_completes() -> None:
    defn = definition(
        {
            "name": "p",
            "kind": "parallel",
            "branches": [
                {"name": "a", "steps": [task("ta", compensate="undo-a")]},
                {"name": "b", "steps": [{"name": "fb", "kind": "fail", "error": "b.broke"}]},
            ],
        },
        compensations=[task("undo-a")],
    )
    run = Run(defn)
    assert run.state.status == "failed"
    assert run.state.outcome["code"] == "b.broke"
    assert one(run.events, E.BranchCancelled).payload["branch"] == "a"
    assert not of(run.events, E.CompensationStarted)  # nothing completed, nothing to undo


def test_a_late_result_of_an_abandoned_child_does_not_answer_a_later_call() -> None:
    race = {
        "name": "race",
        "kind": "parallel",
        "join": {"mode": "any"},
        "branches": [
            {
                "name": "slow",
                "steps": [
                    {
                        "name": "c",
                        "kind": "call",
                        "workflow": "child",
                        "on_parent_cancel": "abandon",
                    }
                ],
            },
            {"name": "fast", "steps": [task("quick")]},
        ],
    }
    defn = definition(
        {"name": "count", "kind": "set", "value": "{n: ((.n // 0) + 1)}"},
        race,
        {
            "name": "again",
            "kind": "choice",
            "choices": [{"when": ".n < 2", "next": "count"}],
            "default": "end",
        },
        {"name": "end", "kind": "succeed"},
    )
    run = Run(defn)
    first_child = run.id_of(E.ChildStartRequested, "child_run_id")
    run.complete("quick")  # the fast branch wins; the child is abandoned, the loop goes round
    second_child = run.id_of(E.ChildStartRequested, "child_run_id")
    assert second_child != first_child and run.state.status == "running"
    late = {"child_run_id": first_child, "status": "completed", "output": {"stale": True}}
    assert run.send(CommandType.ChildFinished, late) == []
    run.send(
        CommandType.ChildFinished,
        {"child_run_id": second_child, "status": "completed", "output": {"fresh": True}},
    )
    assert run.state.status == "completed" and "stale" not in run.state.outcome
