"""Approval quorums, refusals, delegation, expiry, escalation and reminders."""

from __future__ import annotations

from typing import Any

from decider_kit import Run, definition, of, one, simulate, types

from headrace.core.decider.effects import Notify, NotifyApprovers, RequestApproval, effects
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
    effect, note = effects(one(run.events, E.ApprovalRequested))
    assert isinstance(effect, RequestApproval) and effect.assignees == ["ann", "bob"]
    assert isinstance(note, Notify) and note.kind == "approval.requested"
    assert note.users == ("ann", "bob") and note.details["need"] == 2
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
    fresh = {"method": "otp", "at": run.now}
    assert a.decide("ann", data={"limit": 5}) == ["ApprovalDecisionRefused"]
    assert a.decide("ann", step_up=fresh, data={}) == ["ApprovalDecisionRefused"]
    assert "form" in run.last[0].payload["reason"]
    assert a.decide("ann", step_up=fresh, data={"limit": 5})[1] == "ApprovalCompleted"
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
    inbox, note = effects(run.last[1])
    assert isinstance(inbox, NotifyApprovers) and inbox.roles == ["managers"]
    assert isinstance(note, Notify) and note.kind == "approval.escalated"
    assert note.roles == ("managers",) and note.due == run.now + 86_400_000
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


# -- step-up freshness, delegation records, role quorums, SLA deadlines ---------------------


def test_step_up_claims_must_be_fresh_of_an_accepted_method_and_are_recorded() -> None:
    step_up = {"max_age": "2m", "methods": ["otp", "webauthn"]}
    run = Run(definition(_approval(assignees=["ann", "bob", "cy"], step_up=step_up)))
    requested = one(run.events, E.ApprovalRequested).payload
    assert requested["step_up"] == {"max_age_ms": 120_000, "methods": ["otp", "webauthn"]}
    a = Approval(run)
    run.at(600_000)
    now = run.now

    def reason(**claim: Any) -> str:
        assert a.decide("ann", step_up=claim or None) == ["ApprovalDecisionRefused"]
        return str(run.last[0].payload["reason"])

    assert "no step-up claim" in reason()
    assert "names no method" in reason(at=now)
    assert "'sms' is not accepted" in reason(method="sms", at=now)
    assert "no time" in reason(method="otp")
    assert "121 s old" in reason(method="otp", at=now - 121_000)
    assert "after the decision" in reason(method="otp", at=now + 120_000)
    assert a.decide("ann", step_up={"method": "otp", "at": now - 119_000}) == ["ApprovalGranted"]
    granted = one(run.last, E.ApprovalGranted).payload
    assert granted["step_up"] == {"method": "otp", "at": now - 119_000}
    # `step_up: true` means any method, at most five minutes old
    plain = Run(definition(_approval(assignees=["ann"], step_up=True)))
    assert one(plain.events, E.ApprovalRequested).payload["step_up"]["max_age_ms"] == 300_000
    stale = {"method": "pin", "at": plain.now - 301_000}
    assert Approval(plain).decide("ann", step_up=stale) == ["ApprovalDecisionRefused"]
    fresh = {"method": "pin", "at": plain.now - 299_000}
    assert Approval(plain).decide("ann", step_up=fresh)[:2] == [
        "ApprovalGranted",
        "ApprovalCompleted",
    ]


def test_threshold_over_roles_counts_distinct_members_and_ends_only_by_veto() -> None:
    run = Run(definition(_approval(roles=["risk"], quorum="threshold", threshold=2)))
    a = Approval(run)
    assert a.decide("ann", roles=["risk"]) == ["ApprovalGranted"]
    assert a.decide("ann", roles=["risk"]) == ["ApprovalDecisionRefused"]  # not twice
    assert "already decided" in run.last[0].payload["reason"]
    assert a.decide("bob", "reject", roles=["risk"]) == ["ApprovalRejected"]
    assert run.state.status == "running"  # the pool is open: a third member may still approve
    assert a.decide("cy", roles=["risk"])[:2] == ["ApprovalGranted", "ApprovalCompleted"]
    vetoed = Run(definition(_approval(roles=["risk"], quorum="threshold", threshold=2, veto=True)))
    Approval(vetoed).decide("dee", "reject", roles=["risk"])
    assert vetoed.state.outcome["code"] == "approval.rejected"


def test_delegation_keeps_its_reason_and_cannot_hand_a_seat_to_an_approver() -> None:
    run = Run(definition(_approval(assignees=["ann", "bob"], delegation=True)))
    a = Approval(run)
    out = run.send(
        CommandType.DelegateApproval,
        {"approval_id": a.id, "user": "ann", "to": "dan", "reason": "on leave"},
    )
    assert one(out, E.ApprovalDelegated).payload == {
        "approval_id": a.id,
        "flow": "",
        "step": "review",
        "from": "ann",
        "to": "dan",
        "reason": "on leave",
    }
    out = run.send(CommandType.DelegateApproval, {"approval_id": a.id, "user": "dan", "to": "bob"})
    assert "already an approver" in one(out, E.ApprovalDecisionRefused).payload["reason"]
    out = run.send(CommandType.DelegateApproval, {"approval_id": a.id, "user": "eve", "to": "zed"})
    assert "not an assignee" in one(out, E.ApprovalDecisionRefused).payload["reason"]
    pool = Run(
        definition(
            _approval(
                assignees=["ann"], roles=["risk"], quorum="threshold", threshold=2, delegation=True
            )
        )
    )
    p = Approval(pool)
    assert p.decide("zed", roles=["risk"]) == ["ApprovalGranted"]
    out = pool.send(CommandType.DelegateApproval, {"approval_id": p.id, "user": "ann", "to": "zed"})
    assert "zed has already decided" in one(out, E.ApprovalDecisionRefused).payload["reason"]


def test_requests_escalations_and_reminders_say_when_the_approval_expires() -> None:
    business = {"calendar": "eu", "days": 2}
    defn = definition(
        _approval(
            assignees=["ann"],
            expiry_business=business,
            escalate_to_role="managers",
            reminders={"every": "4h", "calendar": "eu", "max": 2},
        )
    )
    run = Run(defn)
    requested = one(run.events, E.ApprovalRequested).payload
    assert requested["expires"] == {
        "due": None,
        "business": {"calendar": "eu", "days": 2, "from": run.now},
    }
    remind = [e for e in of(run.events, E.TimerArmed) if e.payload["purpose"] == "remind"]
    assert remind[0].payload["business"] == {
        "calendar": "eu",
        "duration_ms": 4 * 3_600_000,
        "from": run.now,
    }
    reminded = one(run.at(1000).fire("remind"), E.ApprovalReminderSent).payload
    assert reminded["expires"] == requested["expires"] and reminded["to"] == ["ann"]
    escalated = one(run.at(5000).fire("expiry"), E.ApprovalEscalated).payload
    assert escalated["expires"]["business"]["from"] == run.now
    later = one(run.at(6000).fire("remind"), E.ApprovalReminderSent).payload
    assert later["expires"] == escalated["expires"] and later["roles"] == ["managers"]
    timed = Run(definition(_approval(assignees=["ann"], expiry="2h")))
    assert one(timed.events, E.ApprovalRequested).payload["expires"] == {
        "due": timed.now + 7_200_000,
        "business": None,
    }
