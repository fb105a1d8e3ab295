"""Failures that end a task: catch routing, the DLQ with its attempt history, redrive."""

from __future__ import annotations

import json

import pytest
from support import wait_for
from tasks_kit import (
    Stack,
    deploy_yaml,
    dlq_entries,
    start_run,
    types,
    wait_event,
    wait_status,
)
from typer.testing import CliRunner

from headrace.cli.main import app
from headrace.core.envelope import EventType
from headrace.errors import ErrorCode, HeadraceError
from headrace.settings import Settings

pytestmark = pytest.mark.integration

E = EventType
runner = CliRunner()

CAUGHT = """
type: caught
version: 1
steps:
  - name: charge
    kind: task
    queue: work
    retry: {max_attempts: 5, initial_backoff: 100ms}
    timeouts: {start_to_close: 20s}
    catch: [{errors: [card.declined], next: declined, into: failure}]
    end: true
  - name: declined
    kind: set
    value: "true"
    into: declined
"""

PARKED = """
type: parked
version: 1
steps:
  - name: charge
    kind: task
    queue: work
    into: charged
    retry: {max_attempts: 3, initial_backoff: 100ms, jitter: 0, on_exhausted: park}
    timeouts: {start_to_close: 20s}
  - name: done
    kind: succeed
"""

NOBODY = """
type: nobody
version: 1
steps:
  - name: lonely
    kind: task
    queue: nobody
    retry: {max_attempts: 2, initial_backoff: 100ms}
    timeouts: {schedule_to_start: 700ms}
"""


def cli(settings: Settings, *args: str) -> str:
    env = {"HEADRACE_BOOTSTRAP": settings.bootstrap, "HEADRACE_TOPIC_PREFIX": settings.topic_prefix}
    result = runner.invoke(app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.stdout


def test_a_non_retryable_error_fails_the_step_at_once_and_catch_routes_it(stack: Stack) -> None:
    deploy_yaml(stack.settings, CAUGHT)
    stack.start()
    stack.worker("w1")
    declined = {"fail": [{"code": "card.declined", "retryable": False, "details": {"bank": "x"}}]}
    start_run(stack.settings, "caught", "nr-1", declined)
    evs = wait_status(stack.settings, "nr-1", "completed")
    assert types(evs).count("TaskScheduled") == 1  # no retry, though 5 attempts were allowed
    caught = next(e for e in evs if e.type is E.ErrorCaught)
    assert caught.payload["error"]["code"] == "card.declined"
    assert caught.payload["error"]["details"] == {"bank": "x"}
    output = next(e for e in evs if e.type is E.RunCompleted).payload["output"]
    assert output["declined"] is True and output["failure"]["code"] == "card.declined"
    # the task still went to its DLQ — as a record, not redrivable
    entries = wait_for(lambda: dlq_entries(stack.settings, "work"), 20, "a DLQ entry")
    (entry,) = entries.values()
    assert entry.record["reason"] == "non_retryable" and not entry.parked
    assert not entry.redrivable


def test_exhausted_parked_task_goes_to_the_dlq_with_its_history_and_redrive_completes_it(
    stack: Stack,
) -> None:
    settings = stack.settings
    deploy_yaml(settings, PARKED)
    stack.start()
    stack.worker("w1")
    down = {
        "fail": [{"code": "db.down", "message": f"attempt {n}"} for n in (1, 2, 3)],
        "healthy_worker": "w2",
    }
    start_run(settings, "parked", "park-1", down)
    evs = wait_event(settings, "park-1", E.TaskDeadLettered)
    assert not any(e.type is E.RunFailed for e in evs)
    dead_id = next(e for e in evs if e.type is E.TaskDeadLettered).payload["task_id"]

    entries = wait_for(lambda: dlq_entries(settings, "work"), 20, "the DLQ entry")
    entry = entries[dead_id]
    assert entry.redrivable and entry.record["reason"] == "exhausted"
    history = entry.record["attempts"]
    assert [a["attempt"] for a in history] == [1, 2, 3]
    assert [a["outcome"] for a in history] == ["failed"] * 3
    assert [a["error"]["message"] for a in history] == ["attempt 1", "attempt 2", "attempt 3"]
    assert {a["worker"] for a in history} == {"w1"}
    assert len({a["task_id"] for a in history}) == 3
    assert entry.record["input"] == down and entry.record["idempotency_key"] == "park-1/charge"

    listed = [json.loads(line) for line in cli(settings, "dlq", "list", "--json").splitlines()]
    assert [(x["id"], x["state"], x["attempts"]) for x in listed] == [(dead_id, "parked", 3)]
    shown = json.loads(cli(settings, "dlq", "show", dead_id, "--json"))
    assert shown["attempts"] == history and shown["status"] == "dead"
    table = cli(settings, "dlq", "show", dead_id)
    assert "db.down" in table and "park-1" in table

    # The operator "fixes the database": the fourth delivery of the key succeeds.
    stack.workers["w1"].stop()
    stack.worker("w2")
    cli(settings, "dlq", "redrive", dead_id, "--reason", "db is back")
    evs = wait_status(settings, "park-1", "completed")
    redriven = next(e for e in evs if e.type is E.TaskRedriven)
    assert redriven.payload["reason"] == "db is back" and redriven.payload["task_id"] == dead_id
    again = [e for e in evs if e.type is E.TaskScheduled][-1]
    assert again.payload["attempt"] == 1 and again.idempotency_key == "park-1/charge"
    output = next(e for e in evs if e.type is E.RunCompleted).payload["output"]
    assert output["charged"]["worker"] == "w2"
    assert stack.deliveries_per_key() == {"park-1/charge": 4}

    after = wait_for(
        lambda: (
            dlq_entries(settings, "work")[dead_id].status == "redriven"
            and dlq_entries(settings, "work")
        ),
        20,
        "the entry to be marked redriven",
    )
    assert not after[dead_id].redrivable
    with pytest.raises(HeadraceError) as refused:
        cli(settings, "dlq", "redrive", dead_id)
    assert refused.value.code is ErrorCode.COMMAND_REJECTED


def test_schedule_to_start_timeouts_exhaust_the_task_and_fail_the_run(stack: Stack) -> None:
    settings = stack.settings
    deploy_yaml(settings, NOBODY)
    stack.start()  # no worker serves queue `nobody`
    start_run(settings, "nobody", "lonely-1", {})
    evs = wait_status(settings, "lonely-1", "failed")
    timeouts = [e for e in evs if e.type is E.TaskTimedOut]
    assert [e.payload["timeout"] for e in timeouts] == ["schedule_to_start"] * 2
    failed = next(e for e in evs if e.type is E.StepFailed)
    assert failed.payload["error"]["code"] == "task.exhausted"
    entries = wait_for(lambda: dlq_entries(settings, "nobody"), 20, "the DLQ entry")
    (entry,) = entries.values()
    assert [a["outcome"] for a in entry.record["attempts"]] == ["timed_out", "timed_out"]
    assert entry.record["error"]["code"] == "timeout" and not entry.redrivable
    assert stack.tasks.metric_sum('headrace_tasks_timeouts_total{timeout="schedule_to_start"}') == 2
