"""Control commands record who did what and why: actor and reason on every control event."""

from __future__ import annotations

import pytest
from decider_kit import Run, definition, one, task

from headrace.core.envelope import CommandType, EventType

E = EventType
C = CommandType


def test_suspend_and_resume_record_actor_and_reason() -> None:
    run = Run(definition(task("a")))
    run.send(C.SuspendRun, {"actor": "alice", "reason": "investigating"})
    assert one(run.last, E.RunSuspended).payload == {"actor": "alice", "reason": "investigating"}
    run.send(C.ResumeRun, {"actor": "bob", "reason": "fixed"})
    assert one(run.last, E.RunResumed).payload == {"actor": "bob", "reason": "fixed"}


def test_cancel_records_actor_and_reason() -> None:
    run = Run(definition(task("a")))
    run.send(C.CancelRun, {"actor": "ops", "reason": "customer asked"})
    assert one(run.last, E.RunCancelRequested).payload == {
        "actor": "ops",
        "reason": "customer asked",
    }
    assert one(run.last, E.RunCancelled).payload["error"]["message"] == "customer asked"


def test_terminate_records_actor_and_reason() -> None:
    run = Run(definition(task("a")))
    run.send(C.TerminateRun, {"actor": "ops", "reason": "runaway"})
    p = one(run.last, E.RunTerminated).payload
    assert (p["actor"], p["reason"], p["error"]["message"]) == ("ops", "runaway", "runaway")


@pytest.mark.parametrize(
    ("command", "event"),
    [
        (C.SuspendRun, E.RunSuspended),
        (C.CancelRun, E.RunCancelRequested),
        (C.TerminateRun, E.RunTerminated),
    ],
)
def test_by_is_read_as_the_actor(command: CommandType, event: EventType) -> None:
    run = Run(definition(task("a")))
    run.send(command, {"by": "legacy", "reason": "r"})
    assert one(run.last, event).payload["actor"] == "legacy"


def test_a_parent_cancel_names_the_parent_run_as_actor() -> None:
    """The outbox's CancelRun to a cascaded child says ``actor: run:<parent>``."""
    from headrace.core.codec import decode_command
    from headrace.core.decider.effects import CancelChild
    from headrace.core.outbox import messages_for
    from headrace.topology import Routing, Topics

    (out,) = messages_for([CancelChild("child-1", "t1", "parent-1")], Routing(Topics(), 6))
    assert out.value is not None
    command = decode_command(out.value)
    child = Run(definition(task("a")), run_id="child-1")
    child.send(command.type, command.payload)
    assert one(child.last, E.RunCancelRequested).payload["actor"] == "run:parent-1"
