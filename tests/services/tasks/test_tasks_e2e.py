"""The task service end to end: orchestrator, timers, task service and a raw worker."""

from __future__ import annotations

import pytest
from support import wait_for
from tasks_kit import Stack, deploy_yaml, dlq_entries, start_run, types, wait_status

from headrace.core.envelope import EventType

pytestmark = pytest.mark.integration

E = EventType

TWO_STEPS = """
type: two
version: 1
steps:
  - name: charge
    kind: task
    queue: work
    into: charged
    retry: {max_attempts: 4, initial_backoff: 200ms, multiplier: 2, jitter: 0}
    timeouts: {start_to_close: 20s}
  - name: ship
    kind: task
    queue: work
    priority: 9
    input: "{ship: true}"
    into: shipped
    timeouts: {start_to_close: 20s}
"""


def test_a_workflow_completes_through_the_task_service_and_a_raw_worker(stack: Stack) -> None:
    deploy_yaml(stack.settings, TWO_STEPS)
    stack.start()
    stack.worker("w1")
    start_run(stack.settings, "two", "ok-1", {"order": 7})
    evs = wait_status(stack.settings, "ok-1", "completed")
    assert types(evs).count("TaskStarted") == 2
    started = [e for e in evs if e.type is E.TaskStarted]
    assert {e.payload["worker"] for e in started} == {"w1"}
    done = next(e for e in evs if e.type is E.RunCompleted)
    assert done.payload["output"]["charged"] == {
        "echo": {"order": 7},
        "attempt": 1,
        "worker": "w1",
    }
    topics = {d["topic"] for d in stack.deliveries()}
    prefix = stack.settings.topic_prefix
    assert topics == {f"{prefix}tasks.work", f"{prefix}tasks.work.p9"}  # priority band
    assert stack.deliveries_per_key() == {"ok-1/charge": 1, "ok-1/ship": 1}
    assert dlq_entries(stack.settings, "work") == {}


def test_retries_with_backoff_then_success(stack: Stack) -> None:
    deploy_yaml(stack.settings, TWO_STEPS)
    stack.start()
    stack.worker("w1")
    flaky = {"fail": [{"code": "busy"}, {"code": "busy"}]}
    start_run(stack.settings, "two", "retry-1", flaky)
    evs = wait_status(stack.settings, "retry-1", "completed")
    charge = [e for e in evs if e.payload.get("step") == "charge"]
    assert [e.type.value for e in charge if e.type is not E.StepStarted][:9] == [
        "TaskScheduled",
        "TaskStarted",
        "TaskFailed",
        "TaskRetryScheduled",
        "TimerArmed",
        "TimerFired",
        "TaskScheduled",
        "TaskStarted",
        "TaskFailed",
    ]
    retries = [e for e in evs if e.type is E.TaskRetryScheduled]
    assert [e.payload["delay_ms"] for e in retries] == [200, 400]
    fired = [e for e in evs if e.type is E.TimerFired]
    scheduled = [e for e in evs if e.type is E.TaskRetryScheduled]
    for retry, fire in zip(scheduled, fired, strict=True):
        assert fire.time >= retry.payload["due"]  # the backoff was waited out
    attempts = [e.payload["attempt"] for e in evs if e.type is E.TaskScheduled]
    assert attempts == [1, 2, 3, 1]  # three of charge, then ship
    assert stack.deliveries_per_key()["retry-1/charge"] == 3
    out = next(e for e in evs if e.type is E.RunCompleted).payload["output"]
    assert out["charged"]["attempt"] == 3
    wait_for(lambda: stack.tasks.metric_sum("headrace_tasks_results_total") >= 8, 10, "metrics")
