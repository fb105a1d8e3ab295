"""The approval record view: quorum, decisions, delegation, escalation, endings."""

from __future__ import annotations

from decider_kit import Run, definition, task

from headrace.core.envelope import CommandType, EventType
from headrace.core.views import RunViews, may_decide

C = CommandType
E = EventType


def approval(**kw: object) -> dict[str, object]:
    return {"name": "ok", "kind": "approval", **kw}


def record(run: Run) -> dict:
    (rec,) = RunViews().fold_all(run.events).approvals.values()
    return rec


def test_a_request_becomes_a_pending_record_with_its_rules() -> None:
    run = Run(definition(approval(assignees=["ann", "bob"], roles=["risk"], expiry="2h")))
    rec = record(run)
    assert rec["status"] == "pending"
    assert (rec["assignees"], rec["roles"], rec["quorum"], rec["need"]) == (
        ["ann", "bob"],
        ["risk"],
        "parallel",
        2,
    )
    assert rec["expires"]["due"] == rec["requested_at"] + 2 * 3600 * 1000
    assert rec["run_id"] == "r1" and rec["step"] == "ok"
    assert may_decide(rec, "ann", []) and may_decide(rec, "zed", ["risk"])
    assert not may_decide(rec, "zed", ["other"])


def test_decisions_refusals_and_the_outcome_are_recorded() -> None:
    run = Run(definition(approval(assignees=["ann", "bob"])))
    aid = run.id_of(E.ApprovalRequested, "approval_id")
    decide = C.DecideApproval
    run.at(10).send(
        decide, {"approval_id": aid, "user": "ann", "decision": "approve", "comment": "fine"}
    )
    run.at(20).send(decide, {"approval_id": aid, "user": "eve", "decision": "approve"})
    run.at(30).send(decide, {"approval_id": aid, "user": "bob", "decision": "approve"})
    rec = record(run)
    assert [(d["decision"], d["user"]) for d in rec["decisions"]] == [
        ("granted", "ann"),
        ("refused", "eve"),
        ("granted", "bob"),
    ]
    assert rec["decisions"][0]["reason"] == "fine"
    assert "not an assignee" in rec["decisions"][1]["reason"]
    assert rec["status"] == "approved" and rec["expires"] is None


def test_delegation_hands_the_seat_over() -> None:
    run = Run(definition(approval(assignees=["ann"], delegation=True)))
    aid = run.id_of(E.ApprovalRequested, "approval_id")
    run.send(C.DelegateApproval, {"approval_id": aid, "user": "ann", "to": "cid"})
    rec = record(run)
    assert rec["assignees"] == ["cid"]
    assert rec["decisions"][-1] == {**rec["decisions"][-1], "decision": "delegated", "to": "cid"}


def test_expiry_with_escalation_adds_the_role_then_expires() -> None:
    run = Run(
        definition(
            approval(assignees=["ann"], expiry="1h", escalate_to_role="boss", escalation="late"),
            {"name": "late", "kind": "succeed"},
        )
    )
    run.fire("expiry")
    rec = record(run)
    assert rec["escalated"] and rec["roles"] == ["boss"] and rec["status"] == "pending"
    run.fire("expiry")
    rec = record(run)
    assert rec["status"] == "expired" and rec["ended_at"] is not None


def test_a_cancelled_run_cancels_its_open_approval() -> None:
    run = Run(definition(task("a"), approval(assignees=["ann"])))
    run.complete("a")
    run.send(C.CancelRun, {"reason": "no"})
    assert record(run)["status"] == "cancelled"


def test_a_terminated_run_cancels_its_open_approval() -> None:
    run = Run(definition(approval(assignees=["ann"])))
    run.send(C.TerminateRun, {"reason": "no"})
    assert record(run)["status"] == "cancelled"
