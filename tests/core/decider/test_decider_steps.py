"""choice, set, succeed, fail, wait, wait_signal, call and spawn."""

from __future__ import annotations

from dataclasses import replace

from decider_kit import Run, definition, of, one, simulate, task, types

from headrace.core.decider.effects import ArmTimer, AwaitSignal, StartChild, effects
from headrace.core.envelope import CommandType, EventType
from headrace.core.simulate import EPOCH

E = EventType


def _choice(**kw: object) -> dict[str, object]:
    return {
        "name": "route",
        "kind": "choice",
        "choices": [{"when": ".n > 10", "next": "big"}, {"when": ".n > 5", "next": "mid"}],
        **kw,
    }


def _ends(*names: str) -> list[dict[str, object]]:
    return [{"name": n, "kind": "succeed", "output": f'"{n}"'} for n in names]


def test_choice_takes_the_first_rule_that_holds() -> None:
    defn = definition(_choice(default="small"), *_ends("big", "mid", "small"))
    assert simulate(defn, {"n": 20}).state.outcome == "big"
    assert simulate(defn, {"n": 7}).state.outcome == "mid"
    sim = simulate(defn, {"n": 1})
    assert sim.state.outcome == "small"
    assert one(sim.events, E.ChoiceEvaluated).payload == {
        "flow": "",
        "step": "route",
        "rule": "default",
        "next": "small",
    }


def test_choice_without_a_match_or_default_fails_catchably() -> None:
    sim = simulate(definition(_choice(), *_ends("big", "mid")), {"n": 0})
    assert sim.state.outcome["code"] == "choice.unmatched"
    caught = definition(
        _choice(catch=[{"errors": ["choice.unmatched"], "next": "mid"}]), *_ends("big", "mid")
    )
    assert simulate(caught, {"n": 0}).state.outcome == "mid"


def test_set_replaces_or_places_the_data() -> None:
    replace = definition({"name": "s", "kind": "set", "value": "{a: .x}"})
    assert simulate(replace, {"x": 1, "y": 2}).state.outcome == {"a": 1}
    placed = definition({"name": "s", "kind": "set", "value": ".x * 2", "into": "deep.v"})
    assert simulate(placed, {"x": 4}).state.outcome == {"deep": {"v": 8}, "x": 4}


def test_set_into_a_non_object_is_an_expression_failure() -> None:
    sim = simulate(definition({"name": "s", "kind": "set", "value": "1", "into": "x.y"}), {"x": 3})
    assert sim.state.outcome["code"] == "expression.failed"


def test_expressions_see_input_run_and_logical_now() -> None:
    defn = definition(
        {"name": "s", "kind": "set", "value": "{id: $run.id, t: $run.type, in: $input.k, now: now}"}
    )
    sim = simulate(defn, {"k": "v"})
    assert sim.state.outcome == {"id": "run-1", "t": "t", "in": "v", "now": EPOCH / 1000}


def test_fail_interpolates_its_message() -> None:
    defn = definition(
        {"name": "f", "kind": "fail", "error": "order.bad", "message": "order ${ .id } bad"}
    )
    sim = simulate(defn, {"id": "o-7"})
    assert sim.state.outcome == {"code": "order.bad", "message": "order o-7 bad", "step": "f"}


def test_wait_duration_arms_a_timer_and_resumes_when_it_fires() -> None:
    run = Run(definition({"name": "w", "kind": "wait", "duration": "1h"}, task("after")))
    (effect,) = effects(one(run.events, E.TimerArmed))
    assert isinstance(effect, ArmTimer) and effect.due == EPOCH + 3_600_000
    assert effect.fire.payload == {"timer_id": effect.id}
    run.at(3_600_000).fire("wait")
    assert types(run.last)[:3] == ["TimerFired", "StepCompleted", "StepStarted"]
    assert run.send(CommandType.FireTimer, {"timer_id": effect.id}) == []  # redelivery


def test_wait_until_in_the_past_does_not_wait() -> None:
    defn = definition({"name": "w", "kind": "wait", "until": ".at"}, task("after"))
    sim = simulate(defn, {"at": "2020-01-01T00:00:00Z"})
    assert not of(sim.events, E.TimerArmed)
    later = simulate(defn, {"at": EPOCH + 60_000})
    assert one(later.events, E.TimerArmed).payload["due"] == EPOCH + 60_000
    bad = simulate(defn, {"at": "tomorrow"})
    assert bad.state.outcome["code"] == "expression.failed"


def test_business_wait_hands_the_calendar_to_the_timer_service() -> None:
    defn = definition(
        {"name": "w", "kind": "wait", "business": {"calendar": "de-office", "duration": "16h"}}
    )
    armed = one(Run(defn).events, E.TimerArmed)
    assert armed.payload["due"] is None
    assert armed.payload["business"] == {
        "calendar": "de-office",
        "duration_ms": 16 * 3_600_000,
        "from": EPOCH,
    }


def _signal_step(**kw: object) -> dict[str, object]:
    return {"name": "ws", "kind": "wait_signal", "signal": "go", **kw}


def test_wait_signal_receives_data_and_cancels_its_timeout() -> None:
    run = Run(definition(_signal_step(timeout="1h", into="got")))
    (effect,) = effects(one(run.events, E.SignalAwaited))
    assert isinstance(effect, AwaitSignal) and effect.correlation == "r1"
    run.send(CommandType.DeliverSignal, {"signal": "go", "wait_id": effect.id, "data": {"v": 1}})
    assert types(run.last) == ["SignalReceived", "TimerCancelled", "StepCompleted", "RunCompleted"]
    assert run.state.outcome == {"got": {"v": 1}}
    again = run.send(CommandType.DeliverSignal, {"signal": "go", "wait_id": effect.id})
    assert again == []


def test_wait_signal_correlation_and_output_mapping() -> None:
    defn = definition(_signal_step(correlation=".order", output="{ok: .ok, was: $data.order}"))
    sim = simulate(
        defn,
        {"order": 42},
        {"signals": [{"signal": "go", "correlation": "42", "data": {"ok": True}, "at": "5m"}]},
    )
    assert one(sim.events, E.SignalAwaited).payload["correlation"] == "42"
    assert sim.state.outcome == {"order": 42, "ok": True, "was": 42}


def test_signal_sent_before_the_wait_is_buffered_by_the_driver() -> None:
    defn = definition({"name": "w", "kind": "wait", "duration": "1h"}, _signal_step())
    sim = simulate(defn, {}, {"signals": [{"signal": "go", "at": "1m", "data": {"x": 1}}]})
    assert sim.status == "completed" and sim.state.outcome == {"x": 1}


def test_signal_timeout_goes_to_on_timeout_or_fails() -> None:
    to_step = simulate(definition(_signal_step(timeout="10m", on_timeout="late"), *_ends("late")))
    assert to_step.state.outcome == "late"
    assert one(to_step.events, E.SignalTimedOut)
    failing = simulate(definition(_signal_step(timeout="10m")))
    assert failing.state.outcome["code"] == "signal.timeout"


def test_call_starts_a_child_and_maps_its_result_back() -> None:
    defn = definition(
        {
            "name": "kyc",
            "kind": "call",
            "workflow": "kyc-check",
            "version": 2,
            "input": "{who: .name}",
            "output": "{score: .score}",
            "into": "kyc",
        }
    )
    run = Run(defn, {"name": "ann"})
    (effect,) = effects(one(run.events, E.ChildStartRequested))
    assert isinstance(effect, StartChild) and effect.wait
    assert effect.input == {"who": "ann"} and effect.version == 2
    assert effect.parent == {"tenant": "t1", "run_id": "r1", "step": "kyc", "wait": True}
    run.send(CommandType.ChildStarted, {"child_run_id": effect.id, "version": 2})
    assert types(run.last) == ["ChildStarted"]
    run.send(
        CommandType.ChildFinished,
        {"child_run_id": effect.id, "status": "completed", "output": {"score": 7, "x": 1}},
    )
    assert run.state.outcome == {"name": "ann", "kyc": {"score": 7}}


def test_failed_child_raises_a_catchable_child_failed() -> None:
    defn = definition(
        {
            "name": "kyc",
            "kind": "call",
            "workflow": "kyc-check",
            "catch": [{"errors": ["child.failed"], "next": "manual", "into": "why"}],
        },
        {"name": "manual", "kind": "succeed"},
    )
    sim = simulate(
        defn,
        {},
        {"children": {"kyc": {"status": "failed", "error": {"code": "x", "message": "no"}}}},
    )
    assert sim.status == "completed"
    assert sim.state.outcome["why"]["code"] == "child.failed"
    assert sim.state.outcome["why"]["details"]["status"] == "failed"


def test_spawn_starts_a_child_and_goes_on() -> None:
    defn = definition(
        {"name": "sp", "kind": "spawn", "workflow": "audit", "into": "child"}, task("next")
    )
    run = Run(defn)
    spawned = one(run.events, E.ChildSpawned)
    (effect,) = effects(spawned)
    assert isinstance(effect, StartChild) and not effect.wait
    assert types(run.events)[-2:] == ["StepStarted", "TaskScheduled"]
    run.complete("next")
    assert run.state.outcome == {"child": spawned.payload["child_run_id"]}


def test_a_timer_fire_command_continues_the_arming_events_trace() -> None:
    run = Run(definition({"name": "w", "kind": "wait", "duration": "1h"}, task("after")))
    armed = one(run.events, E.TimerArmed)
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    (effect,) = effects(replace(armed, traceparent=tp))
    assert isinstance(effect, ArmTimer)
    assert effect.fire.traceparent == tp
    (untraced,) = effects(replace(armed, traceparent=None))
    assert isinstance(untraced, ArmTimer) and untraced.fire.traceparent is None
