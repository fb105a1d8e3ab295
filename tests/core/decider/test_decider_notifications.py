"""What people are told: ``Notify`` effects and their messages on the ``notifications`` topic."""

from __future__ import annotations

import json
from typing import Any

from decider_kit import Run, definition, of, one, task

from headrace.core.decider.effects import NOTIFICATION_KINDS, Notify, effects
from headrace.core.envelope import CommandType, Event, EventType
from headrace.core.outbox import messages_for
from headrace.topology import Routing, Topics

E = EventType
ROUTING = Routing(Topics("p."), partitions=6)


def notes(events: list[Event]) -> list[Notify]:
    return [eff for ev in events for eff in effects(ev) if isinstance(eff, Notify)]


def bodies(events: list[Event]) -> list[dict[str, Any]]:
    out = []
    for m in messages_for([eff for ev in events for eff in effects(ev)], ROUTING):
        if m.topic == "p.notifications":
            assert m.key == "t1/r1" and m.partition == ROUTING.partition("t1", "r1")
            assert dict(m.headers or [])["content-type"] == b"application/json"
            body = json.loads(m.value or b"")
            assert dict(m.headers or [])["headrace-kind"] == body["kind"].encode()
            out.append(body)
    return out


def test_an_approval_request_is_announced_with_recipients_and_due_time() -> None:
    run = Run(
        definition(
            {
                "name": "review",
                "kind": "approval",
                "assignees": ["ann", "bob"],
                "roles": ["risk"],
                "quorum": "threshold",
                "threshold": 1,
                "expiry": "1h",
                "step_up": True,
            }
        )
    )
    (body,) = bodies(run.events)
    requested = one(run.events, E.ApprovalRequested)
    assert body == {
        "id": f"r1:{requested.seq}",
        "kind": "approval.requested",
        "tenant": "t1",
        "run_id": "r1",
        "workflow_type": "t",
        "workflow_version": 1,
        "step": "review",
        "approval_id": requested.payload["approval_id"],
        "recipients": {"users": ["ann", "bob"], "roles": ["risk"]},
        "due": run.now + 3_600_000,
        "due_business": None,
        "time": run.now,
        "details": {
            "quorum": "threshold",
            "need": 1,
            "veto": False,
            "delegation": False,
            "step_up": True,
        },
    }


def test_reminders_escalations_delegations_refusals_and_the_close_are_notified() -> None:
    run = Run(
        definition(
            {
                "name": "review",
                "kind": "approval",
                "assignees": ["ann", "bob"],
                "delegation": True,
                "expiry": "1h",
                "escalate_to_role": "managers",
                "reminders": {"every": "10m", "max": 1},
            }
        )
    )
    aid = run.id_of(E.ApprovalRequested, "approval_id")
    run.at(600_000).fire("remind")
    run.at(3_600_000).fire("expiry")
    run.send(CommandType.DelegateApproval, {"approval_id": aid, "user": "ann", "to": "dan"})
    run.send(CommandType.DecideApproval, {"approval_id": aid, "user": "eve", "decision": "approve"})
    run.send(CommandType.DecideApproval, {"approval_id": aid, "user": "dan", "decision": "reject"})
    got = {b["kind"]: b for b in bodies(run.events)}
    assert list(got) == [
        "approval.requested",
        "approval.reminder",
        "approval.escalated",
        "approval.delegated",
        "approval.refused",
        "approval.closed",
    ]
    assert got["approval.reminder"]["recipients"] == {"users": ["ann", "bob"], "roles": []}
    assert got["approval.reminder"]["details"] == {"count": 1}
    assert got["approval.escalated"]["recipients"] == {"users": [], "roles": ["managers"]}
    assert got["approval.escalated"]["due"] == run.at(3_600_000).now + 3_600_000
    assert got["approval.delegated"]["recipients"]["users"] == ["dan"]
    assert got["approval.delegated"]["details"] == {"from": "ann", "to": "dan"}
    assert got["approval.refused"]["recipients"]["users"] == ["eve"]
    assert "not an assignee" in got["approval.refused"]["details"]["reason"]
    assert got["approval.closed"]["details"] == {
        "status": "rejected",
        "approved": [],
        "rejected": ["dan"],
    }
    assert len({b["id"] for b in got.values()}) == len(got)  # one id per event: dedupe key
    assert set(got) | {"sla.at_risk", "sla.breached"} == set(NOTIFICATION_KINDS)


def test_sla_warnings_are_notified_with_the_deadline() -> None:
    run = Run(definition(task("a", sla={"within": "1h"})))
    armed = {e.payload["purpose"]: e for e in of(run.events, E.TimerArmed)}
    for purpose, at in (("sla_risk", 2_880_000), ("sla_breach", 3_600_000)):
        (timer,) = effects(armed[purpose])
        run.at(at).send(CommandType.FireTimer, timer.fire.payload)  # type: ignore[attr-defined]
    at_risk, breached = notes(run.events)
    deadline = armed["sla_breach"].time + 3_600_000
    assert (at_risk.kind, at_risk.step, at_risk.due) == ("sla.at_risk", "a", deadline)
    assert (breached.kind, breached.due, breached.approval_id) == ("sla.breached", deadline, None)
    assert breached.details == {"scope": "step", "within": "1h", "at_risk": 0.8}
