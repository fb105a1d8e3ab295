"""Run lifecycle and the decider's contract: suspension, idempotency, time, snapshots."""

from __future__ import annotations

import pytest
from decider_kit import Run, definition, of, one, simulate, task, types

from headrace.core.decider import State, apply, decide, evolve
from headrace.core.decider.context import fast_event_id
from headrace.core.decider.effects import NotifyParent, effects
from headrace.core.envelope import Command, CommandType, EventType, event_id_for
from headrace.core.simulate import EPOCH

E = EventType


def test_suspend_holds_results_and_new_steps_until_resume() -> None:
    run = Run(definition(task("a"), task("b")))
    run.send(CommandType.SuspendRun, {"reason": "investigating"})
    run.complete("a", {"x": 1})
    assert types(run.last) == ["TaskCompleted", "StepCompleted"]  # recorded, b not started
    assert run.state.flows[""].step == "b"
    run.send(CommandType.ResumeRun, {})
    assert types(run.last) == ["RunResumed", "StepStarted", "TaskScheduled"]


def test_a_suspended_run_whose_last_step_ends_completes_only_on_resume() -> None:
    run = Run(definition(task("a")))
    run.send(CommandType.SuspendRun, {})
    run.complete("a", {"x": 1})
    assert types(run.last) == ["TaskCompleted", "StepCompleted"]  # held, not completed
    assert not run.state.finished
    run.send(CommandType.ResumeRun, {})
    assert types(run.last) == ["RunResumed", "RunCompleted"]
    assert one(run.last, E.RunCompleted).payload["output"] == {"x": 1}
    assert run.state.finished


def test_a_held_completion_survives_a_replay_of_the_events() -> None:
    run = Run(definition(task("a")))
    run.send(CommandType.SuspendRun, {})
    run.complete("a", {"x": 1})
    replayed = State()
    for event in run.events:
        evolve(replayed, event)
    assert replayed.to_bytes() == run.state.to_bytes()


def test_suspend_defers_a_due_retry_until_resume() -> None:
    run = Run(definition(task("a", retry={"max_attempts": 3})))
    run.fail("a")
    run.send(CommandType.SuspendRun, {})
    run.fire("retry")
    assert types(run.last) == ["TimerFired"]
    run.send(CommandType.ResumeRun, {})
    assert types(run.last) == ["RunResumed", "TaskScheduled"]
    assert one(run.last, E.TaskScheduled).payload["attempt"] == 2


def test_suspend_and_resume_are_idempotent() -> None:
    run = Run(definition(task("a")))
    assert types(run.send(CommandType.SuspendRun, {}, cid="s")) == ["RunSuspended"]
    assert run.send(CommandType.SuspendRun, {}, cid="s") == []
    assert run.send(CommandType.SuspendRun, {}, cid="s2") == []  # already suspended
    assert types(run.send(CommandType.ResumeRun, {}, cid="r")) == ["RunResumed"]
    assert run.send(CommandType.ResumeRun, {}, cid="r") == []


def test_recent_command_ids_stay_bounded() -> None:
    run = Run(definition(task("a")))
    for i in range(200):
        run.send(CommandType.RecordMarker, {"name": f"m{i}"}, cid=f"m{i}")
    assert len(run.state.recent) == 64
    assert run.send(CommandType.RecordMarker, {"name": "again"}, cid="m199") == []


def test_commands_before_start_or_after_the_end_do_nothing() -> None:
    defn = definition(task("a"))
    state = State()
    stray = Command("x", "t", "r", CommandType.CancelRun, EPOCH, {})
    assert apply(state, stray, defn) == [] and not state.started
    run = Run(defn)
    run.complete("a")
    assert run.state.status == "completed"
    assert run.send(CommandType.CancelRun, {}) == []
    assert run.send(CommandType.StartRun, {"input": {}}) == []


def test_unsupported_commands_are_recorded_as_rejected_without_changing_state() -> None:
    run = Run(definition(task("a")))
    flows = run.state.clone().flows[""].to_list()
    out = run.send(CommandType.MigrateRun, {"to": 2}, cid="mig")
    assert types(out) == ["CommandRejected"]
    assert out[0].payload["command"] == "MigrateRun"
    assert run.state.flows[""].to_list() == flows
    assert run.send(CommandType.MigrateRun, {"to": 2}, cid="mig") == []


def test_update_run_data_and_markers() -> None:
    run = Run(definition(task("a")), {"x": 1})
    run.send(CommandType.UpdateRunData, {"value": 5, "into": "limits.max"})
    run.send(CommandType.RecordMarker, {"name": "checkpoint", "data": {"n": 1}})
    assert types(run.last) == ["MarkerRecorded"]
    bad = run.send(CommandType.UpdateRunData, {"value": 1, "into": "x.y"})
    assert types(bad) == ["CommandRejected"]
    run.complete("a")
    assert run.state.outcome == {"x": 1, "limits": {"max": 5}}


def test_input_schema_is_enforced_at_start() -> None:
    defn = definition(task("a"), input_schema={"type": "object", "required": ["order"]})
    sim = simulate(defn, {"nope": 1})
    assert types(sim.events) == ["RunStarted", "RunFailed"]
    assert sim.state.outcome["code"] == "input.invalid"
    assert simulate(defn, {"order": 1}).status == "completed"


def test_a_loop_without_a_wait_is_stopped() -> None:
    defn = definition(
        {"name": "spin", "kind": "choice", "choices": [{"when": "true", "next": "again"}]},
        {"name": "again", "kind": "set", "value": ".", "next": "spin"},
    )
    sim = simulate(defn)
    assert sim.state.outcome["code"] == "loop.limit"
    assert len(sim.events) < 40_000


def test_logical_time_never_goes_backwards() -> None:
    run = Run(definition({"name": "w", "kind": "wait", "duration": "1m"}, task("a")))
    run.at(120_000).fire("wait")
    run.at(1_000)  # a late command with an older clock
    run.complete("a")
    assert all(e.time >= EPOCH + 120_000 for e in run.last)
    assert run.state.time == EPOCH + 120_000


def test_decide_is_pure_and_apply_matches_it() -> None:
    defn = definition(task("a"), task("b"))
    run = Run(defn)
    before = run.state.to_bytes()
    cmd = run.command(CommandType.CompleteTask, {"task_id": run.task_id("a"), "result": {"v": 1}})
    decided = decide(run.state, cmd, defn)
    assert run.state.to_bytes() == before
    assert decided == apply(run.state, cmd, defn)


def test_snapshot_round_trips_and_rejects_foreign_bytes() -> None:
    run = Run(
        definition(
            {
                "name": "p",
                "kind": "parallel",
                "branches": [
                    {"name": "x", "steps": [task("t1")]},
                    {"name": "y", "steps": [task("t2")]},
                ],
            }
        )
    )
    raw = run.state.to_bytes()
    again = State.from_bytes(raw)
    assert again.to_bytes() == raw and list(again.flows) == list(run.state.flows)
    with pytest.raises(ValueError, match="replay"):
        State.from_bytes(b'{"json": true}')
    with pytest.raises(ValueError, match="replay"):
        State.from_bytes(raw[:20])


def test_fast_event_ids_equal_the_envelope_ones() -> None:
    for seq in (1, 2, 99, 123456789):
        assert fast_event_id("acme", "run-7", seq) == event_id_for("acme", "run-7", seq)
    run = Run(definition(task("a")))
    assert all(e.event_id == event_id_for("t1", "r1", e.seq) for e in run.events)


def test_a_child_run_reports_back_to_its_waiting_parent() -> None:
    defn = definition(task("a"))
    state = State()
    parent = {"tenant": "t1", "run_id": "p1", "step": "kyc", "wait": True}
    start = Command("s", "t1", "p1:5", CommandType.StartRun, EPOCH, {"input": {}, "parent": parent})
    events = apply(state, start, defn)
    tid = one(events, E.TaskScheduled).payload["task_id"]
    done = apply(
        state,
        Command(
            "d",
            "t1",
            "p1:5",
            CommandType.CompleteTask,
            EPOCH,
            {"task_id": tid, "result": {"ok": 1}},
        ),
        defn,
    )
    (notify,) = [eff for ev in done for eff in effects(ev) if isinstance(eff, NotifyParent)]
    assert notify.command.run_id == "p1" and notify.command.type is CommandType.ChildFinished
    assert notify.command.payload == {
        "child_run_id": "p1:5",
        "status": "completed",
        "output": {"ok": 1},
    }
    assert not of(done, E.RunFailed)


def test_run_and_step_slas_record_risk_and_breach_then_disarm() -> None:
    defn = definition(
        {"name": "w", "kind": "wait", "duration": "3h", "sla": {"within": "1h", "at_risk": 0.5}},
        task("a"),
        sla={"within": "10h"},
    )
    sim = simulate(defn)
    marks = [
        (e.type.value, e.payload["scope"], e.time - EPOCH)
        for e in sim.events
        if e.type in (E.SlaAtRisk, E.SlaBreached)
    ]
    assert marks == [("SlaAtRisk", "step", 1_800_000), ("SlaBreached", "step", 3_600_000)]
    cancelled = {e.payload["purpose"] for e in of(sim.events, E.TimerCancelled)}
    assert cancelled == {"sla_risk", "sla_breach"}  # the run's, at its end
    assert sim.state.pending == {}


def test_business_sla_hands_the_fraction_to_the_timer_service() -> None:
    defn = definition(task("a"), sla={"business": {"calendar": "eu", "days": 2}, "at_risk": 0.75})
    armed = of(Run(defn).events, E.TimerArmed)
    assert [a.payload["business"].get("fraction") for a in armed] == [0.75, None]
    assert all(a.payload["business"]["days"] == 2 for a in armed)


def test_sla_events_carry_their_deadline() -> None:
    from headrace.core.decider.effects import ArmTimer

    defn = definition(task("a", sla={"within": "1h", "at_risk": 0.5}))
    run = Run(defn)
    armed = [e for e in of(run.events, E.TimerArmed) if e.payload["purpose"].startswith("sla")]
    deadline = run.now + 3_600_000
    assert {e.payload["deadline"] for e in armed} == {deadline}
    fire = [eff for e in armed for eff in effects(e) if isinstance(eff, ArmTimer)]
    assert {f.fire.payload["deadline"] for f in fire} == {deadline}
    (risk_timer,) = [f for f in fire if f.purpose == "sla_risk"]
    risk = run.at(1_800_000).send(CommandType.FireTimer, risk_timer.fire.payload)
    assert one(risk, E.SlaAtRisk).payload == {
        "scope": "step",
        "step": "a",
        "within": "1h",
        "at_risk": 0.5,
        "deadline": deadline,
    }
    # a business-time breach is due when the timer service resolved it: the command's time
    biz = Run(definition(task("a", sla={"business": {"calendar": "eu", "days": 1}})))
    assert one(biz.at(7_000).fire("sla_breach"), E.SlaBreached).payload["deadline"] == biz.now
    assert one(biz.at(9_000).fire("sla_risk"), E.SlaAtRisk).payload["deadline"] is None
