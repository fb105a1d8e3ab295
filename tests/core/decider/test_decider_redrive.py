"""Parking an exhausted task (``retry.on_exhausted: park``) and redriving it."""

from __future__ import annotations

import random
from typing import Any

from decider_kit import Run, definition, of, one, simulate, task, types
from decider_strategies import scenarios
from hypothesis import given
from test_decider_properties import PROPERTY

from headrace.core.chain import seal
from headrace.core.codec import decode_event
from headrace.core.decider import State, apply, evolve
from headrace.core.decider.effects import CancelTask, ScheduleTask, effects
from headrace.core.decider.tasks import EXHAUSTED, NON_RETRYABLE, final_failure
from headrace.core.dsl.model import Definition
from headrace.core.envelope import Command, CommandType, EventType
from headrace.core.simulate import Script, Simulation, TaskAnswer

E = EventType
PARK = {"max_attempts": 2, "initial_backoff": "1s", "on_exhausted": "park"}


def _exhaust(run: Run, step: str = "a") -> str:
    """Fail every attempt of ``step``; returns the dead attempt's task id."""
    run.fail(step)
    run.fire("retry")
    dead = run.task_id(step)
    run.fail(step)
    return dead


def test_final_failure_names_why_an_attempt_is_the_last() -> None:
    assert final_failure(3, [], 1, "x", None) is None
    assert final_failure(3, [], 3, "x", None) == EXHAUSTED
    assert final_failure(3, ["x"], 1, "x", None) == NON_RETRYABLE
    assert final_failure(3, [], 1, "x", False) == NON_RETRYABLE
    assert final_failure(None, [], 99, "x", True) is None


def test_exhausted_parked_task_keeps_the_run_waiting_at_its_step() -> None:
    run = Run(definition(task("a", retry=PARK), task("b")))
    dead = _exhaust(run)
    assert types(run.last) == ["TaskFailed", "TaskDeadLettered"]
    lettered = one(run.last, E.TaskDeadLettered)
    assert lettered.payload["task_id"] == dead and lettered.payload["attempt"] == 2
    assert lettered.payload["error"]["code"] == "boom" and lettered.payload["queue"] == "work"
    assert run.state.status == "running"
    assert run.state.pending == {dead: ["", "parked"]}


def test_redrive_schedules_attempt_one_again_with_the_same_key_and_the_run_goes_on() -> None:
    run = Run(definition(task("a", retry=PARK), task("b")))
    first = run.task_id("a")
    dead = _exhaust(run)
    run.send(CommandType.RedriveTask, {"task_id": dead, "actor": "ops", "reason": "fixed"})
    assert types(run.last) == ["TaskRedriven", "TaskScheduled"]
    redriven = one(run.last, E.TaskRedriven)
    assert redriven.payload == {
        "task_id": dead,
        "flow": "",
        "step": "a",
        "attempt": 2,
        "actor": "ops",
        "reason": "fixed",
    }
    again = one(run.last, E.TaskScheduled)
    assert again.payload["attempt"] == 1
    assert again.payload["task_id"] not in (first, dead)
    assert again.idempotency_key == "r1/a"
    (effect,) = effects(again)
    assert isinstance(effect, ScheduleTask) and effect.retry["on_exhausted"] == "park"
    run.complete("a", {"paid": True})
    run.complete("b")
    assert run.state.status == "completed" and run.state.outcome == {"paid": True}


def test_redrive_gives_a_fresh_attempt_budget_and_can_park_again() -> None:
    run = Run(definition(task("a", retry=PARK)))
    dead = _exhaust(run)
    run.send(CommandType.RedriveTask, {"task_id": dead})
    run.fail("a")
    assert types(run.last) == ["TaskFailed", "TaskRetryScheduled", "TimerArmed"]
    run.fire("retry")
    assert one(run.last, E.TaskScheduled).payload["attempt"] == 2
    second_dead = run.task_id("a")
    run.fail("a")
    assert one(run.last, E.TaskDeadLettered).payload["task_id"] == second_dead


def test_redrive_of_a_task_that_is_not_parked_or_redriven_twice_yields_nothing() -> None:
    run = Run(definition(task("a", retry=PARK)))
    running = run.task_id("a")
    assert run.send(CommandType.RedriveTask, {"task_id": running}) == []
    assert run.send(CommandType.RedriveTask, {"task_id": "nope"}) == []
    dead = _exhaust(run)
    assert run.send(CommandType.RedriveTask, {"task_id": dead}, cid="redrive-1")
    assert run.send(CommandType.RedriveTask, {"task_id": dead}, cid="redrive-1") == []
    assert run.send(CommandType.RedriveTask, {"task_id": dead}, cid="redrive-2") == []


def test_fail_mode_and_non_retryable_errors_fail_the_step_and_cannot_be_redriven() -> None:
    failing = Run(definition(task("a", retry={**PARK, "on_exhausted": "fail"})))
    dead = _exhaust(failing)
    assert one(failing.last, E.StepFailed).payload["error"]["code"] == "task.exhausted"
    assert failing.send(CommandType.RedriveTask, {"task_id": dead}) == []
    declined = Run(definition(task("a", retry=PARK)))
    declined.fail("a", "card.declined", retryable=False)
    assert types(declined.last) == ["TaskFailed", "StepFailed", "RunFailed"]


def test_parked_timeouts_park_too() -> None:
    sim = simulate(
        definition(task("a", retry=PARK)),
        script={"tasks": {"a": {"timeout": "start_to_close"}}},
    )
    assert sim.status == "running"
    assert one(sim.events, E.TaskDeadLettered).payload["error"]["code"] == "timeout"
    assert sim.waiting_on() == ["parked of step 'a'"]


def test_cancelling_a_run_cancels_its_parked_task() -> None:
    run = Run(definition(task("a", retry=PARK)))
    dead = _exhaust(run)
    run.send(CommandType.CancelRun, {"reason": "give up"})
    cancelled = one(run.last, E.TaskCancelled)
    assert cancelled.payload["task_id"] == dead
    assert [e.id for e in effects(cancelled) if isinstance(e, CancelTask)] == [dead]
    assert run.state.status == "cancelled"


def test_a_failing_sibling_branch_cancels_the_parked_task() -> None:
    parallel = {
        "name": "p",
        "kind": "parallel",
        "branches": [
            {"name": "x", "steps": [task("a", retry=PARK)]},
            {"name": "y", "steps": [task("b", retry={"max_attempts": 1})]},
        ],
    }
    run = Run(definition(parallel))
    dead = _exhaust(run)
    run.fail("b")
    assert dead in [e.payload["task_id"] for e in of(run.last, E.TaskCancelled)]
    assert run.state.status == "failed"


def test_redrive_while_suspended_dispatches_on_resume() -> None:
    run = Run(definition(task("a", retry=PARK)))
    dead = _exhaust(run)
    run.send(CommandType.SuspendRun)
    assert types(run.send(CommandType.RedriveTask, {"task_id": dead})) == ["TaskRedriven"]
    run.send(CommandType.ResumeRun)
    assert types(run.last) == ["RunResumed", "TaskScheduled"]
    assert one(run.last, E.TaskScheduled).payload["attempt"] == 1


def test_simulated_redrive_control_completes_a_parked_run_and_replay_agrees() -> None:
    sim = simulate(
        definition(task("a", retry=PARK)),
        script={
            "tasks": {"a": [{"error": "x"}, {"error": "x"}, {"result": {"ok": 1}}]},
            "control": [{"at": "1h", "command": "redrive"}],
        },
    )
    assert types(sim.events).count("TaskDeadLettered") == 1
    assert sim.status == "completed" and sim.state.outcome == {"ok": 1}
    replayed = State()
    for ev in sim.events:
        evolve(replayed, ev)
    assert replayed.to_bytes() == sim.state.to_bytes()


# -- properties over random definitions whose every task parks --------------------------

_REDRIVES = [
    {"at": "30m", "command": "suspend"},
    *({"at": f"{h}h", "command": "redrive"} for h in (1, 2, 4, 8)),
    {"at": "3h", "command": "resume"},
]


def _parking(scenario: tuple[Definition, Any, dict[str, Any], int]) -> Simulation:
    """``scenario`` with ``on_exhausted: park`` on every task and operators redriving."""
    definition_, run_input, script, seed = scenario
    raw = _park_all(definition_.model_dump(by_alias=True, exclude_none=True))
    script = {**script, "control": [*script["control"], *_REDRIVES]}
    return Simulation(
        Definition.model_validate(raw),
        run_input,
        Script.from_dict(script),
        responder=_flaky(seed),
        max_commands=3000,
    ).run()


def _flaky(seed: int) -> Any:
    """A worker that fails more often than it succeeds, so that tasks park."""
    rng = random.Random(seed)

    def answer(task: ScheduleTask, now: int) -> TaskAnswer:
        delay = rng.choice([0, 1000, 60_000])
        roll = rng.random()
        if roll < 0.35:
            return TaskAnswer("result", {"n": rng.randint(0, 9)}, delay)
        if roll < 0.9:
            code = rng.choice(["boom", "boom", "card.declined"])
            return TaskAnswer("error", {"code": code, "message": "flaky"}, delay)
        return TaskAnswer("timeout", rng.choice(["start_to_close", "heartbeat"]), delay)

    return answer


def _park_all(node: Any) -> Any:
    if isinstance(node, list):
        return [_park_all(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _park_all(v) for k, v in node.items()}
    if out.get("kind") == "task":
        out["retry"] = {**out.get("retry", {}), "on_exhausted": "park"}
    return out


@PROPERTY
@given(scenarios().map(_parking))
def test_parked_runs_end_or_wait_only_for_a_redrive(sim: Simulation) -> None:
    purposes = {purpose for _, purpose in sim.state.pending.values()}
    assert sim.state.finished or purposes == {"parked"}, (sim.status, sim.waiting_on())


@PROPERTY
@given(scenarios().map(_parking))
def test_replaying_parked_and_redriven_runs_rebuilds_the_identical_state(sim: Simulation) -> None:
    sealed = seal(sim.events)
    replayed = State()
    for _, raw in sealed:
        evolve(replayed, decode_event(raw))
    sim.state.seal(sealed[-1][0].hash)
    assert replayed.to_bytes() == sim.state.to_bytes()


@PROPERTY
@given(scenarios().map(_parking))
def test_reapplying_any_command_of_a_parking_run_yields_nothing(sim: Simulation) -> None:
    state = State()
    seen: list[Command] = []
    for cmd in sim.commands:
        apply(state, cmd, sim.definition)
        before = state.to_bytes()
        assert apply(state, cmd, sim.definition) == [], cmd
        assert state.to_bytes() == before
        seen.append(cmd)
