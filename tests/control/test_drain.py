"""Drain: new starts are refused (router and orchestrator, to the DLQ with the reason),
in-flight runs finish, `drain status` counts down to drained, undrain accepts again."""

from __future__ import annotations

import json

import pytest
from control_kit import (
    TENANT,
    ApiProcess,
    Service,
    cli,
    complete_task,
    dead_letters,
    deploy_yaml,
    start_run,
    task_requests,
    wait_event,
)
from support import wait_for

from headrace.core.envelope import EventType
from headrace.settings import Settings

pytestmark = pytest.mark.integration
E = EventType

JOB = """
type: job
version: 1
steps:
  - {name: s1, kind: task, queue: work}
"""
CALLER = """
type: caller
version: 1
steps:
  - name: sub
    kind: call
    workflow: job
    catch: [{errors: [child.failed], next: fallback, into: why}]
  - {name: fallback, kind: succeed}
"""


def _letters(settings: Settings, code: bytes) -> list[dict[str, bytes]]:
    return [
        dict(r.headers)
        for r in dead_letters(settings)
        if dict(r.headers).get("headrace-error-code") == code
    ]


def _status(settings: Settings, api: ApiProcess) -> list[dict]:
    result = cli(settings, api, "drain", "status", "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_drain_refuses_starts_lets_runs_finish_and_undrain_accepts_again(
    platform: Settings, orchestrator: Service, router: Service, api: ApiProcess
) -> None:
    deploy_yaml(platform, JOB, CALLER)
    orchestrator.start()
    router.start()
    api.start()
    inflight = start_run(platform, "job", "inflight")
    (s1,) = wait_for(lambda: task_requests(platform, inflight, "s1"), 60, "s1 dispatched")

    done = cli(platform, api, "drain", "--type", "job", "--reason", "db migration", "--as", "ops")
    assert done.exit_code == 0, done.output
    for service in (router, orchestrator):
        service.wait_metric("headrace_drains_active", 1.0)

    started = cli(platform, api, "start", "job", "--no-check", "-t", TENANT, "--run-id", "late")
    assert started.exit_code == 0, started.output
    by_router = wait_for(lambda: _letters(platform, b"HR-RUN-004"), 60, "router dead letter")[0]
    reason = by_router["headrace-error"].decode()
    assert "'job' is draining" in reason and "db migration" in reason and "by ops" in reason
    assert "headrace undrain --type job" in reason
    start_run(platform, "job", "direct")  # straight to `commands`, past the router
    letters = wait_for(
        lambda: len(_letters(platform, b"HR-RUN-004")) >= 2 and _letters(platform, b"HR-RUN-004"),
        60,
        "orchestrator dead letter",
    )
    assert letters[1]["headrace-service"] == b"orchestrator"
    caller = start_run(platform, "caller")  # its child is refused: a catchable child.failed
    events = wait_event(platform, caller, E.RunCompleted, timeout=60)
    why = next(e for e in events if e.type is E.RunCompleted).payload["output"]["why"]
    assert why["code"] == "child.failed" and "HR-RUN-004" in why["message"]

    (row,) = _status(platform, api)
    assert (row["kind"], row["name"], row["state"], row["running"]) == (
        "type",
        "job",
        "draining",
        1,
    )
    orchestrator.kill9()  # the in-flight run finishes across a crash
    orchestrator.start()
    complete_task(platform, s1)
    wait_event(platform, inflight, E.RunCompleted, timeout=90)
    (row,) = _status(platform, api)
    assert (row["state"], row["left"]) == ("drained", 0)
    for gone in ("late", "direct"):
        assert api.client().get("/runs", type="job", fresh=True)["runs"][0]["run_id"] != gone

    lifted = cli(platform, api, "undrain", "--type", "job")
    assert lifted.exit_code == 0, lifted.output
    for service in (router, orchestrator):
        service.wait_metric("headrace_drains_active", 0.0)
    again = cli(platform, api, "start", "job", "--no-check", "-t", TENANT, "--run-id", "after")
    assert again.exit_code == 0, again.output
    wait_event(platform, "after", E.RunStarted)
    assert _status(platform, api) == []


def test_a_tenant_drain_refuses_every_type_of_that_tenant_only(
    platform: Settings, orchestrator: Service, api: ApiProcess
) -> None:
    deploy_yaml(platform, JOB)
    orchestrator.start()
    done = cli(platform, api, "drain", "--tenant", "closing", "--reason", "offboarding")
    assert done.exit_code == 0, done.output
    orchestrator.wait_metric("headrace_drains_active", 1.0)
    start_run(platform, "job", "refused", tenant="closing")
    start_run(platform, "job", "welcome", tenant="open")
    wait_event(platform, "welcome", E.RunStarted, tenant="open")
    letter = wait_for(lambda: _letters(platform, b"HR-RUN-004"), 60, "dead letter")[0]
    assert "tenant 'closing' is draining" in letter["headrace-error"].decode()
    assert "headrace undrain --tenant closing" in letter["headrace-error"].decode()
