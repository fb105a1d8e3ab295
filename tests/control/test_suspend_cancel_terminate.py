"""suspend, resume, cancel, terminate end to end; each survives a kill -9 of the orchestrator."""

from __future__ import annotations

import pytest
from control_kit import (
    TENANT,
    ApiProcess,
    Service,
    cli,
    complete_task,
    deploy_yaml,
    history,
    start_run,
    task_requests,
    types,
    wait_event,
)
from support import wait_for

from headrace.core.envelope import EventType
from headrace.services.responder import Responder
from headrace.settings import Settings

pytestmark = pytest.mark.integration
E = EventType

HOLD = """
type: hold
version: 1
steps:
  - {name: s1, kind: task, queue: work}
  - {name: s2, kind: task, queue: work}
  - {name: s3, kind: task, queue: work}
"""

SAGA = """
type: saga
version: 1
steps:
  - {name: a, kind: task, queue: work, compensate: undo_a}
  - {name: b, kind: task, queue: work, compensate: undo_b}
  - {name: w, kind: wait, duration: 1h}
compensations:
  - {name: undo_a, kind: task, queue: work}
  - {name: undo_b, kind: task, queue: work}
"""


def _one(events: list, kind: EventType) -> dict:
    found = [e for e in events if e.type is kind]
    assert len(found) == 1, types(events)
    return found[0].payload


def test_suspend_holds_a_result_and_resume_continues(
    platform: Settings, orchestrator: Service, api: ApiProcess
) -> None:
    deploy_yaml(platform, HOLD)
    orchestrator.start()
    api.start()
    run = start_run(platform, "hold")
    (s1,) = wait_for(lambda: task_requests(platform, run, "s1"), 60, "s1 dispatched")

    done = cli(platform, api, "suspend", run, "-t", TENANT, "--reason", "audit", "--as", "alice")
    assert done.exit_code == 0, done.output
    orchestrator.kill9()  # in the middle: the command is in `commands`, maybe not decided
    orchestrator.start()
    client = api.client()
    view = client.wait_run(TENANT, run, lambda v: v["status"] == "suspended", timeout=90)
    assert view is not None and view["suspension"]["reason"] == "audit"

    complete_task(platform, s1)  # the worker finishes while the run is suspended
    events = wait_event(platform, run, E.StepCompleted, where=lambda e: e.payload["step"] == "s1")
    assert types(events)[-2:] == ["TaskCompleted", "StepCompleted"]  # held: s2 did not start
    assert _one(events, E.RunSuspended) == {"actor": "alice", "reason": "audit"}

    orchestrator.kill9()  # a replay must keep holding
    orchestrator.start()
    resumed = cli(
        platform, api, "resume", run, "-t", TENANT, "--reason", "checked", "--as", "bob", "--wait"
    )
    assert resumed.exit_code == 0, resumed.output
    worker = Responder(platform).start()
    try:
        events = wait_event(platform, run, E.RunCompleted, timeout=90)
    finally:
        worker.stop()
    kinds = types(events)
    assert kinds.index("RunResumed") < kinds.index("StepStarted", kinds.index("RunSuspended"))
    assert _one(events, E.RunResumed) == {"actor": "bob", "reason": "checked"}
    steps = [e.payload["step"] for e in events if e.type is E.StepStarted]
    assert steps == ["s1", "s2", "s3"]
    assert client.run(TENANT, run, fresh=True)["status"] == "completed"


def test_cancel_compensates_in_reverse_order_then_cancels(
    platform: Settings, orchestrator: Service, api: ApiProcess, responder: Responder
) -> None:
    deploy_yaml(platform, SAGA)
    orchestrator.start()
    api.start()
    run = start_run(platform, "saga")
    wait_event(platform, run, E.TimerArmed)  # a and b are done, w waits

    done = cli(platform, api, "cancel", run, "-t", TENANT, "--reason", "customer", "--as", "ops")
    assert done.exit_code == 0, done.output
    orchestrator.kill9()
    orchestrator.start()
    events = wait_event(platform, run, E.RunCancelled, timeout=90)
    kinds = types(events)
    assert _one(events, E.RunCancelRequested) == {"actor": "ops", "reason": "customer"}
    assert _one(events, E.CompensationStarted)["steps"] == ["undo_b", "undo_a"]
    order = [e.payload["compensation"] for e in events if e.type is E.CompensationStepStarted]
    assert order == ["undo_b", "undo_a"]  # reverse order of completion
    assert kinds.index("CompensationCompleted") < kinds.index("RunCancelled") == len(kinds) - 1
    assert "TimerCancelled" in kinds
    view = api.client().run(TENANT, run, fresh=True)
    assert view["status"] == "cancelled" and view["error"]["message"] == "customer"
    assert view["control"][-1]["op"] == "cancel"


def test_terminate_is_immediate_without_compensation(
    platform: Settings, orchestrator: Service, api: ApiProcess, responder: Responder
) -> None:
    deploy_yaml(platform, SAGA)
    orchestrator.start()
    api.start()
    run = start_run(platform, "saga")
    wait_event(platform, run, E.TimerArmed)

    done = cli(
        platform,
        api,
        "terminate",
        run,
        "-t",
        TENANT,
        "--reason",
        "runaway",
        "--as",
        "ops",
        "--wait",
        "--timeout",
        "90s",
    )
    assert done.exit_code == 0, done.output
    orchestrator.kill9()
    orchestrator.start()
    events = history(platform, run)
    kinds = types(events)
    assert kinds[-2:] == ["TimerCancelled", "RunTerminated"]
    assert not any(k.startswith("Compensation") for k in kinds)
    p = _one(events, E.RunTerminated)
    assert (p["actor"], p["reason"]) == ("ops", "runaway")
    # a terminate after the end is refused with the run's state
    again = cli(platform, api, "terminate", run, "-t", TENANT, "--reason", "again")
    assert again.exit_code == 1 and "already ended (terminated)" in again.output
