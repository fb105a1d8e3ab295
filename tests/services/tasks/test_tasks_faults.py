"""Faults: a worker killed mid-task, late and stray results, the task service killed under load."""

from __future__ import annotations

import time

import pytest
from support import wait_for
from tasks_kit import (
    TENANT,
    Stack,
    deploy_yaml,
    events,
    start_run,
    start_runs,
    wait_event,
    wait_status,
)

from headrace.audit import audit_events
from headrace.core.envelope import EventType
from headrace.core.task_codec import ResultKind, TaskResult, encode_result
from headrace.kafka import flush, make_producer
from headrace.settings import Settings

pytestmark = pytest.mark.integration

E = EventType

SLOW = """
type: slow
version: 1
steps:
  - name: work
    kind: task
    queue: work
    retry: {max_attempts: 3, initial_backoff: 200ms}
    timeouts: {start_to_close: 60s, heartbeat: 1500ms}
"""

GHOSTED = """
type: ghosted
version: 1
steps:
  - name: work
    kind: task
    queue: work
    retry: {max_attempts: 3, initial_backoff: 200ms}
    timeouts: {start_to_close: 1500ms}
"""

LOAD = """
type: load
version: 1
steps:
  - {name: a, kind: task, queue: work, timeouts: {start_to_close: 30s}}
  - {name: b, kind: task, queue: work, priority: 7, timeouts: {start_to_close: 30s}}
"""


def test_a_worker_killed_mid_task_loses_its_lease_and_the_run_completes_once(
    stack: Stack,
) -> None:
    settings = stack.settings
    deploy_yaml(settings, SLOW)
    stack.start()
    stack.worker("w1")
    start_run(settings, "slow", "slow-1", {"slow_worker": "w1", "work_ms": 120_000})
    wait_for(lambda: stack.deliveries(), 60, "w1 to take the task")
    wait_event(settings, "slow-1", E.TaskStarted)
    stack.workers["w1"].kill9()  # it sent `started` and heartbeats, then dies mid-task

    evs = wait_event(settings, "slow-1", E.TaskTimedOut)
    timed_out = next(e for e in evs if e.type is E.TaskTimedOut)
    assert timed_out.payload["timeout"] == "heartbeat" and timed_out.payload["attempt"] == 1
    stack.worker("w2")  # takes over the group: attempt 1 again (never committed) and attempt 2
    evs = wait_status(settings, "slow-1", "completed")

    assert [e.type for e in evs].count(E.RunCompleted) == 1
    assert [e.type for e in evs].count(E.TaskCompleted) == 1
    completed = next(e for e in evs if e.type is E.TaskCompleted)
    assert completed.payload["attempt"] == 2
    deliveries = stack.deliveries()
    assert {d["idempotency_key"] for d in deliveries} == {"slow-1/work"}
    assert [(d["worker"], d["attempt"]) for d in deliveries][:1] == [("w1", 1)]
    assert ("w2", 2) in [(d["worker"], d["attempt"]) for d in deliveries]
    assert len(deliveries) >= 2
    if ("w2", 1) in [(d["worker"], d["attempt"]) for d in deliveries]:
        # the redelivered first attempt answered after its timeout: ignored, never applied
        wait_for(
            lambda: (
                stack.tasks.metric_sum('headrace_tasks_stale_results_total{kind="completed"') >= 1
            ),
            20,
            "the late result to be counted as stale",
        )


def _late(settings: Settings, run_id: str, task_id: str, attempt: int) -> None:
    result = TaskResult(task_id, attempt, ResultKind.COMPLETED, "ghost", 0, output={"late": 1})
    producer = make_producer(settings, "test-late")
    producer.produce(
        settings.topics.task_results,
        encode_result(result),
        f"{TENANT}/{run_id}",
        partition=settings.routing.partition(TENANT, run_id),
    )
    flush(producer)


def test_results_of_old_attempts_and_unknown_tasks_are_ignored(stack: Stack) -> None:
    settings = stack.settings
    deploy_yaml(settings, GHOSTED)
    stack.start()
    stack.worker("w1")
    start_run(settings, "ghosted", "ghost-1", {"ghost": [1]})
    evs = wait_status(settings, "ghost-1", "completed")
    timed_out = next(e for e in evs if e.type is E.TaskTimedOut)
    assert timed_out.payload["timeout"] == "start_to_close"
    scheduled = [e for e in evs if e.type is E.TaskScheduled]
    first, second = (e.payload["task_id"] for e in scheduled)
    before = len(events(settings, "ghost-1"))

    _late(settings, "ghost-1", first, 1)  # the first attempt, after it timed out
    _late(settings, "ghost-1", second, 1)  # the live task, but another attempt number
    _late(settings, "ghost-1", "ghost-1:999", 1)  # no such task

    def counted() -> bool:
        m = stack.tasks.metrics()
        return all(
            m.get(f'headrace_tasks_stale_results_total{{kind="completed",reason="{r}"}}', 0) >= 1
            for r in ("finished", "attempt", "unknown")
        )

    wait_for(counted, 20, "three stale results counted")
    time.sleep(0)  # nothing to wait for: the results were handled when they were counted
    assert len(events(settings, "ghost-1")) == before
    assert "ignored completed result of task" in stack.tasks.log_path.read_text()


def test_the_task_service_killed_under_load_loses_no_task(stack: Stack) -> None:
    settings = stack.settings
    deploy_yaml(settings, LOAD)
    stack.start()
    stack.wait_ready()
    stack.worker("w1")
    stack.worker("w2")
    tasks = stack.tasks
    dispatched = 'headrace_tasks_dispatched_total{queue="work"}'
    runs: list[str] = []
    for wave in range(4):
        # a wave of runs, and a kill -9 once this process has dispatched part of it
        runs += start_runs(settings, "load", {f"load-{wave}-{i}": {"i": i} for i in range(100)})
        wait_for(lambda: tasks.metric_sum(dispatched) >= 40, 60, "part of the wave dispatched")
        tasks.kill9()
        tasks.start()
        stack.wait_ready()

    def all_done() -> bool:
        report = audit_events(settings)
        return report.by_status().get("completed", 0) == len(runs)

    wait_for(all_done, 240, f"{len(runs)} runs to complete")
    report = audit_events(settings)
    assert not report.broken
    for run in report.runs.values():
        assert dict(run.steps_completed) == {"a": 1, "b": 1}, run.key
    per_key = stack.deliveries_per_key()
    assert set(per_key) == {f"{r}/{s}" for r in runs for s in ("a", "b")}
    assert tasks.starts == 5
