"""Approval quorums, refusals, delegation, expiry, escalation and reminders."""

from __future__ import annotations

from typing import Any

from decider_kit import Run, definition, of, one, simulate, types

from headrace.core.decider.effects import NotifyApprovers, RequestApproval, effects
from headrace.core.envelope import CommandType, EventType

E = EventType


def _approval(**kw: Any) -> dict[str, Any]:
    return {"name": "review", "kind": "approval", "into": "review", **kw}


class Approval:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.id = run.id_of(E.ApprovalRequested, "approval_id")

    def decide(self, user: str, decision: str = "approve", **kw: Any) -> list[str]:
        payload = {"approval_id": self.id, "user": user, "decision": decision, **kw}
        return types(self.run.send(CommandType.DecideApproval, payload))


def test_parallel_quorum_needs_every_assignee() -> None:
    run = Run(definition(_approval(assignees=["ann", "bob"])))
    (effect,) = effects(one(run.events, E.ApprovalRequested))
    assert isinstance(effect, RequestApproval) and effect.assignees == ["ann", "bob"]
    a = Approval(run)
    assert a.decide("ann") == ["ApprovalGranted"]
    assert a.decide("bob")[:2] == ["ApprovalGranted", "ApprovalCompleted"]
    assert run.state.outcome["review"]["outcome"] == "approved"
    assert [d["user"] for d in run.state.outcome["review"]["decisions"]] == ["ann", "bob"]


def test_parallel_quorum_rejects_on_the_first_rejection() -> None:
    run = Run(definition(_approval(assignees=["ann", "bob"])))
    Approval(run).decide("bob", "reject", comment="no")
    assert run.state.outcome["code"] == "approval.rejected"


def test_rejection_goes_to_on_reject_when_given() -> None:
    defn = definition(
        _approval(assignees=["ann"], on_reject="declined"),
        {"name": "fine", "kind": "succeed"},
        {"name": "declined", "kind": "succeed", "output": '"declined"'},
    )
    run = Run(defn)
    Approval(run).decide("ann", "reject")
    assert run.state.outcome == "declined"


def test_serial_quorum_takes_decisions_in_order_and_refuses_others() -> None:
    run = Run(definition(_approval(assignees=["ann", "bob", "cy"], quorum="serial")))
    a = Approval(run)
    assert a.decide("bob") == ["ApprovalDecisionRefused"]
    assert "waiting for ann" in one(run.last, E.ApprovalDecisionRefused).payload["reason"]
    assert a.decide("ann") == ["ApprovalGranted"]
    assert a.decide("bob") == ["ApprovalGranted"]
    assert a.decide("cy")[1] == "ApprovalCompleted"
    assert run.state.status == "completed"


def test_threshold_with_veto_and_out_of_reach_rejection() -> None:
    run = Run(definition(_approval(assignees=["a", "b", "c"], quorum="threshold", threshold=2)))
    a = Approval(run)
    a.decide("a", "reject")
    assert run.state.status == "running"  # b and c can still make it
    a.decide("b", "reject")
    assert run.state.outcome["code"] == "approval.rejected"
    vetoed = Run(
        definition(_approval(assignees=["a", "b", "c"], quorum="threshold", threshold=2, veto=True))
    )
    Approval(vetoed).decide("c", "reject")
    assert vetoed.state.outcome["code"] == "approval.rejected"
    ok = Run(definition(_approval(assignees=["a", "b", "c"], quorum="threshold", threshold=2)))
    Approval(ok).decide("a")
    Approval(ok).decide("c")
    assert ok.state.outcome["review"]["outcome"] == "approved"


def test_role_members_may_decide_and_outsiders_are_refused_without_effect() -> None:
    run = Run(definition(_approval(roles=["credit-officer"])))
    a = Approval(run)
    pending = dict(run.state.pending)
    assert a.decide("eve", roles=["intern"]) == ["ApprovalDecisionRefused"]
    assert run.state.flows[""].sub["decisions"] == []
    assert run.state.pending == pending
    assert a.decide("zed", roles=["credit-officer"])[:2] == ["ApprovalGranted", "ApprovalCompleted"]


def test_duplicate_decisions_are_refused_and_redeliveries_ignored() -> None:
    run = Run(definition(_approval(assignees=["ann", "bob"])))
    a = Approval(run)
    cmd = {"approval_id": a.id, "user": "ann", "decision": "approve"}
    run.send(CommandType.DecideApproval, cmd, cid="d1")
    assert run.send(CommandType.DecideApproval, cmd, cid="d1") == []
    assert types(run.send(CommandType.DecideApproval, cmd, cid="d2")) == ["ApprovalDecisionRefused"]
    assert run.send(CommandType.DecideApproval, cmd, cid="d2") == []


def test_step_up_and_form_are_enforced() -> None:
    form = {"type": "object", "required": ["limit"], "properties": {"limit": {"type": "number"}}}
    run = Run(definition(_approval(assignees=["ann"], step_up=True, form=form)))
    a = Approval(run)
    assert a.decide("ann", data={"limit": 5}) == ["ApprovalDecisionRefused"]
    assert a.decide("ann", step_up=True, data={}) == ["ApprovalDecisionRefused"]
    assert "form" in run.last[0].payload["reason"]
    assert a.decide("ann", step_up=True, data={"limit": 5})[1] == "ApprovalCompleted"
    assert run.state.outcome["review"]["decisions"][0]["data"] == {"limit": 5}


def test_delegation_hands_the_decision_on() -> None:
    run = Run(definition(_approval(assignees=["ann", "bob"], quorum="serial", delegation=True)))
    a = Approval(run)
    out = run.send(CommandType.DelegateApproval, {"approval_id": a.id, "user": "ann", "to": "dan"})
    assert types(out) == ["ApprovalDelegated"]
    assert a.decide("ann") == ["ApprovalDecisionRefused"]
    assert a.decide("dan") == ["ApprovalGranted"]
    assert a.decide("bob")[1] == "ApprovalCompleted"
    no = Run(definition(_approval(assignees=["ann"])))
    out = no.send(
        CommandType.DelegateApproval, {"approval_id": Approval(no).id, "user": "ann", "to": "dan"}
    )
    assert types(out) == ["ApprovalDecisionRefused"]


def test_expiry_escalates_to_a_role_then_goes_to_the_escalation_step() -> None:
    defn = definition(
        _approval(
            assignees=["ann"], expiry="1d", escalate_to_role="managers", escalation="auto-decline"
        ),
        {"name": "fine", "kind": "succeed"},
        {"name": "auto-decline", "kind": "succeed", "output": '"escalated"'},
    )
    run = Run(defn)
    run.at(86_400_000).fire("expiry")
    assert types(run.last) == ["TimerFired", "ApprovalEscalated", "TimerArmed"]
    (note,) = effects(run.last[1])
    assert isinstance(note, NotifyApprovers) and note.roles == ["managers"]
    a = Approval(run)
    assert a.decide("mia", roles=["managers"])[:2] == ["ApprovalGranted", "ApprovalCompleted"]
    again = Run(defn)
    again.fire("expiry")
    again.fire("expiry")
    assert of(again.last, E.ApprovalExpired) and again.state.outcome == "escalated"


def test_expiry_without_escalation_fails_approval_expired() -> None:
    sim = simulate(definition(_approval(assignees=["ann"], expiry="2h")))
    assert sim.state.outcome["code"] == "approval.expired"


def test_reminders_repeat_until_max_and_stop_when_decided() -> None:
    defn = definition(
        _approval(assignees=["ann", "bob"], reminders={"every": "1h", "max": 3}, expiry="1d")
    )
    sim = simulate(defn)
    reminders = of(sim.events, E.ApprovalReminderSent)
    assert [r.payload["count"] for r in reminders] == [1, 2, 3]
    assert reminders[0].payload["to"] == ["ann", "bob"]
    decided = simulate(
        defn,
        {},
        {"approvals": {"review": [{"user": "ann", "at": "90m"}, {"user": "bob", "at": "100m"}]}},
    )
    assert len(of(decided.events, E.ApprovalReminderSent)) == 1
    assert decided.status == "completed"
    assert not decided.state.pending


def test_assignees_from_data() -> None:
    defn = definition(_approval(assignees_from=".approvers"))
    sim = simulate(
        defn, {"approvers": ["x", "y"]}, {"approvals": {"review": [{"user": "x"}, {"user": "y"}]}}
    )
    assert sim.status == "completed"
    bad = simulate(defn, {"approvers": "x"})
    assert bad.state.outcome["code"] == "expression.failed"
