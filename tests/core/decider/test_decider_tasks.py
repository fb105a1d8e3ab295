"""Task steps: scheduling, results, output mapping, retries, timeouts, idempotency."""

from __future__ import annotations

from decider_kit import Run, definition, of, one, simulate, task, types

from headrace.core.decider.backoff import backoff_ms
from headrace.core.decider.effects import ScheduleTask, effects
from headrace.core.dsl.model import RetryPolicy
from headrace.core.envelope import CommandType, EventType
from headrace.core.simulate import EPOCH

E = EventType


def test_task_schedules_with_mapped_input_and_completes_into_a_path() -> None:
    run = Run(
        definition(task("charge", input="{amount: .order.total}", into="payment", priority=7)),
        {"order": {"total": 12}},
    )
    scheduled = one(run.events, E.TaskScheduled)
    assert scheduled.payload["input"] == {"amount": 12}
    assert scheduled.payload["priority"] == 7
    assert scheduled.idempotency_key == "r1/charge"
    assert scheduled.payload["task_id"] == "r1:3"  # effect id of its own event
    run.complete("charge", {"id": "ch_1"})
    assert types(run.last) == ["TaskCompleted", "StepCompleted", "RunCompleted"]
    assert run.state.outcome == {"order": {"total": 12}, "payment": {"id": "ch_1"}}


def test_output_maps_the_result_with_data_in_scope() -> None:
    run = Run(definition(task("a", output="{sum: (.n + $data.base)}")), {"base": 10})
    run.complete("a", {"n": 5})
    assert run.state.outcome == {"base": 10, "sum": 15}


def test_task_effect_carries_timeouts_retry_policy_and_key() -> None:
    step = task(
        "a",
        timeouts={"start_to_close": "30s", "heartbeat": "5s"},
        retry={"max_attempts": 4, "initial_backoff": "2s", "non_retryable": ["bad"]},
        config={"method": "POST"},
    )
    run = Run(definition(step))
    (effect,) = effects(one(run.events, E.TaskScheduled))
    assert isinstance(effect, ScheduleTask)
    assert effect.timeouts == {"start_to_close_ms": 30_000, "heartbeat_ms": 5_000}
    assert effect.retry["max_attempts"] == 4 and effect.retry["non_retryable"] == ["bad"]
    assert effect.idempotency_key == "r1/a" and effect.config == {"method": "POST"}


def test_retry_uses_deterministic_backoff_and_keeps_the_idempotency_key() -> None:
    policy = {"max_attempts": 3, "initial_backoff": "1s", "multiplier": 2.0, "jitter": 0.2}
    run = Run(definition(task("a", retry=policy)))
    first = run.task_id("a")
    run.fail("a")
    retry = one(run.last, E.TaskRetryScheduled)
    expected = backoff_ms(RetryPolicy.model_validate(policy), 1, first)
    assert retry.payload["delay_ms"] == expected
    assert 800 <= expected <= 1200
    timer = one(run.last, E.TimerArmed)
    assert timer.payload["due"] == EPOCH + expected and timer.payload["purpose"] == "retry"
    assert retry.payload["timer_id"] == timer.payload["timer_id"]
    run.at(expected).fire("retry")
    second = one(run.last, E.TaskScheduled)
    assert second.payload["attempt"] == 2 and second.payload["task_id"] != first
    assert second.idempotency_key == "r1/a"


def test_a_retry_after_hint_longer_than_the_backoff_delays_the_next_attempt() -> None:
    run = Run(definition(task("a", retry={"max_attempts": 3, "initial_backoff": "1s"})))
    run.fail("a", "http.429", details={"retry_after_ms": 30_000})
    assert one(run.last, E.TaskRetryScheduled).payload["delay_ms"] == 30_000
    run.at(30_000).fire("retry")
    shorter = run.fail("a", "http.429", details={"retry_after_ms": 5})
    delay = one(shorter, E.TaskRetryScheduled).payload["delay_ms"]
    assert delay > 5  # the policy's backoff wins when it is longer


def test_stale_attempt_results_change_nothing() -> None:
    run = Run(definition(task("a", retry={"max_attempts": 3})))
    first = run.task_id("a")
    run.fail("a")
    run.fire("retry")
    late = run.send(CommandType.CompleteTask, {"task_id": first, "result": {"late": True}})
    assert late == []
    run.complete("a", {"ok": True})
    assert run.state.outcome == {"ok": True}


def test_non_retryable_code_fails_the_step_with_the_workers_code() -> None:
    run = Run(definition(task("a", retry={"max_attempts": 5, "non_retryable": ["card.declined"]})))
    run.fail("a", "card.declined")
    assert types(run.last) == ["TaskFailed", "StepFailed", "RunFailed"]
    assert run.state.outcome["code"] == "card.declined"


def test_worker_can_mark_an_error_not_retryable() -> None:
    run = Run(definition(task("a", retry={"max_attempts": 5})))
    run.fail("a", "validation", retryable=False)
    assert run.state.status == "failed" and run.state.outcome["code"] == "validation"


def test_exhausted_attempts_fail_with_task_exhausted() -> None:
    sim = simulate(
        definition(task("a", retry={"max_attempts": 3, "initial_backoff": "1s"})),
        script={"tasks": {"a": {"error": {"code": "flaky", "message": "no"}}}},
    )
    assert len(of(sim.events, E.TaskScheduled)) == 3
    failed = one(sim.events, E.StepFailed)
    assert failed.payload["error"]["code"] == "task.exhausted"
    assert failed.payload["error"]["details"]["last_error"]["code"] == "flaky"
    assert sim.status == "failed"


def test_failures_then_success_from_the_script() -> None:
    sim = simulate(
        definition(task("a", retry={"max_attempts": 4})),
        script={"tasks": {"a": [{"error": "x"}, {"error": "x"}, {"result": {"v": 1}}]}},
    )
    assert [e.payload["attempt"] for e in of(sim.events, E.TaskScheduled)] == [1, 2, 3]
    assert sim.state.outcome == {"v": 1}


def test_timeouts_are_retried_unless_listed_non_retryable() -> None:
    retried = simulate(
        definition(task("a", retry={"max_attempts": 2})),
        script={"tasks": {"a": [{"timeout": "start_to_close"}, {"result": {}}]}},
    )
    assert retried.status == "completed"
    assert one(retried.events, E.TaskTimedOut).payload["timeout"] == "start_to_close"
    fatal = simulate(
        definition(task("a", retry={"max_attempts": 5, "non_retryable": ["timeout"]})),
        script={"tasks": {"a": {"timeout": "heartbeat"}}},
    )
    assert fatal.state.outcome["code"] == "timeout"


def test_unbounded_retries_keep_going() -> None:
    sim = simulate(
        definition(task("a", retry={"max_attempts": None, "initial_backoff": "1s"})),
        script={"tasks": {"a": [{"error": "x"}] * 30 + [{"result": {}}]}},
    )
    assert len(of(sim.events, E.TaskScheduled)) == 31 and sim.status == "completed"


def test_task_started_is_recorded_once() -> None:
    run = Run(definition(task("a")))
    tid = run.task_id("a")
    assert types(run.send(CommandType.TaskStarted, {"task_id": tid, "worker": "w1"})) == [
        "TaskStarted"
    ]
    assert run.send(CommandType.TaskStarted, {"task_id": tid}) == []


def test_idempotency_key_expression_and_loop_visits() -> None:
    loop = definition(
        task("poll", idempotency_key='"poll-" + (.n | tostring)'),
        {"name": "inc", "kind": "set", "value": "{n: (.n + 1)}"},
        {
            "name": "again",
            "kind": "choice",
            "choices": [{"when": ".n < 3", "next": "poll"}],
            "default": "done",
        },
        task("check"),
        {"name": "done", "kind": "succeed"},
    )
    sim = simulate(loop, {"n": 0})
    keys = [e.idempotency_key for e in of(sim.events, E.TaskScheduled)]
    assert keys == ["poll-0", "poll-1", "poll-2"]
    looped = definition(
        task("poll"),
        {"name": "inc", "kind": "set", "value": "{n: (.n + 1)}"},
        {
            "name": "again",
            "kind": "choice",
            "choices": [{"when": ".n < 3", "next": "poll"}],
            "default": "done",
        },
        {"name": "done", "kind": "succeed"},
    )
    sim = simulate(looped, {"n": 0})
    keys = [e.idempotency_key for e in of(sim.events, E.TaskScheduled)]
    assert keys == ["run-1/poll", "run-1/poll@2", "run-1/poll@3"]


def test_input_expression_failure_is_a_catchable_step_error() -> None:
    defn = definition(
        task(
            "a",
            input='.x | error("nope")',
            catch=[{"errors": ["expression.failed"], "next": "recover", "into": "err"}],
        ),
        {"name": "recover", "kind": "succeed"},
    )
    sim = simulate(defn, {"x": 1})
    assert sim.status == "completed"
    assert sim.state.outcome["err"]["code"] == "expression.failed"
