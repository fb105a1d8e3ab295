"""Child workflows: call maps the result back, a failing child is a catchable child.failed,
spawn goes on, and a parent's cancel cascades or abandons per the step's policy."""

from __future__ import annotations

import time

import pytest
from control_kit import (
    TENANT,
    ApiProcess,
    Service,
    cli,
    deploy_yaml,
    history,
    send,
    start_run,
    types,
    wait_event,
)

from headrace.core.envelope import Command, CommandType, EventType
from headrace.services.responder import Responder
from headrace.settings import Settings

pytestmark = pytest.mark.integration
E = EventType

KID = """
type: kid
version: 1
steps:
  - {name: k1, kind: task, queue: work}
"""
BADKID = """
type: badkid
version: 1
steps:
  - {name: boom, kind: fail, error: kid.broken, message: "no stock"}
"""
SLEEPER = """
type: sleeper
version: 1
steps:
  - {name: nap, kind: wait, duration: 1h}
"""
PARENT = """
type: parent
version: 1
steps:
  - {name: ask, kind: call, workflow: kid, input: "{x: .n}", output: ".echo.x", into: kid_x}
  - name: risky
    kind: call
    workflow: badkid
    catch: [{errors: [child.failed], next: side, into: failure}]
  - {name: side, kind: spawn, workflow: sleeper, into: spawned}
  - {name: done, kind: succeed}
"""
CASCADE = """
type: pcascade
version: 1
steps:
  - {name: c, kind: call, workflow: sleeper, on_parent_cancel: cascade}
"""
ABANDON = """
type: pabandon
version: 1
steps:
  - {name: c, kind: call, workflow: sleeper, on_parent_cancel: abandon}
"""


def _child_of(events: list, step: str) -> str:
    for e in events:
        if e.type in (E.ChildStartRequested, E.ChildSpawned) and e.payload["step"] == step:
            return str(e.payload["child_run_id"])
    raise AssertionError(f"no child for {step}: {types(events)}")


def test_call_maps_the_result_a_failed_child_is_caught_and_spawn_goes_on(
    platform: Settings, orchestrator: Service, api: ApiProcess, responder: Responder
) -> None:
    deploy_yaml(platform, KID, BADKID, SLEEPER, PARENT)
    orchestrator.start()
    run = start_run(platform, "parent", input={"n": 7})
    wait_event(platform, run, E.ChildStartRequested)
    orchestrator.kill9()  # the child starts through `commands`; a restart must not lose it
    orchestrator.start()
    api.start()

    events = wait_event(platform, run, E.RunCompleted, timeout=90)
    output = next(e for e in events if e.type is E.RunCompleted).payload["output"]
    assert output["kid_x"] == 7  # the child's result, mapped by `output`, placed by `into`
    assert output["failure"]["code"] == "child.failed"
    assert "kid.broken" in output["failure"]["message"]
    sleeper = _child_of(events, "side")
    assert output["spawned"] == sleeper

    failed = next(e for e in events if e.type is E.ChildFailed)
    assert failed.payload["status"] == "failed"
    client = api.client()
    parent = client.run(TENANT, run, fresh=True)
    modes = {c["step"]: (c["mode"], c["status"]) for c in parent["children"]}
    assert modes == {
        "ask": ("call", "completed"),
        "risky": ("call", "failed"),
        "side": ("spawn", "spawned"),
    }
    kid = client.run(TENANT, _child_of(events, "ask"))
    assert kid["status"] == "completed" and kid["parent"]["run_id"] == run
    assert kid["input"] == {"x": 7}
    # the spawned child goes on after its parent ended
    assert client.run(TENANT, sleeper)["status"] == "running"


def _quiesce(settings: Settings, run_id: str) -> None:
    """Wait until every command queued for the run's partition before now was decided:
    a marker sent now is decided after them (one partition, in order)."""
    marker = f"quiesce-{time.monotonic_ns()}"
    send(settings, Command(marker, TENANT, run_id, CommandType.RecordMarker, 0, {"name": marker}))
    wait_event(settings, run_id, E.MarkerRecorded, where=lambda e: e.payload["name"] == marker)


@pytest.mark.parametrize(("workflow", "cascade"), [("pcascade", True), ("pabandon", False)])
def test_a_parent_cancel_cascades_or_abandons_its_child(
    platform: Settings,
    orchestrator: Service,
    api: ApiProcess,
    workflow: str,
    cascade: bool,
) -> None:
    deploy_yaml(platform, SLEEPER, CASCADE, ABANDON)
    orchestrator.start()
    api.start()
    run = start_run(platform, workflow)
    child = _child_of(wait_event(platform, run, E.ChildStartRequested), "c")
    wait_event(platform, child, E.TimerArmed)

    done = cli(platform, api, "cancel", run, "-t", TENANT, "--reason", "order withdrawn")
    assert done.exit_code == 0, done.output
    orchestrator.kill9()
    orchestrator.start()
    wait_event(platform, run, E.RunCancelled, timeout=90)
    client = api.client()
    if cascade:
        events = wait_event(platform, child, E.RunCancelled, timeout=90)
        requested = next(e for e in events if e.type is E.RunCancelRequested).payload
        assert requested["actor"] == f"run:{run}"
        assert client.run(TENANT, child, fresh=True)["status"] == "cancelled"
    else:
        _quiesce(platform, child)
        assert "RunCancelRequested" not in types(history(platform, child))
        assert client.run(TENANT, child, fresh=True)["status"] == "running"
    parent = client.run(TENANT, run, fresh=True)
    assert parent["status"] == "cancelled"
    assert parent["children"][0]["status"] == ("cancel_requested" if cascade else "requested")
