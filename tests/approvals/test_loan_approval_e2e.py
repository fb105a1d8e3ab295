"""The loan-approval example end to end on the real broker, approvals given through the CLI.

Orchestrator, timer service and query API run as processes; tasks are answered
by a stand-in with the domain's results; the applicant's documents arrive as
the signal the run waits for. Three applications:

* A — underwriting by quorum: an outsider is refused, alice delegates to dan,
  dan and bob approve (2 of 3); paid out.
* B — nobody decides: reminders, SLA at risk and breached, the expiry adds the
  senior underwriters, the next expiry hands over to the credit committee, whose
  decision is refused without a second factor and granted with one; paid out.
* C — left in underwriting, for the SLA report's prediction.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from control_kit import TENANT, ApiProcess, Service, cli, deploy_yaml, history, wait_event
from loan_kit import (
    CALENDAR,
    LoanResponder,
    example_texts,
    loan_approval,
    notifications,
    start_loan,
    upload_documents,
)
from support import wait_for

from headrace.core.envelope import EventType
from headrace.settings import Settings

pytestmark = pytest.mark.integration
E = EventType


def _approval(settings: Settings, run: str, step: str) -> str:
    events = wait_event(
        settings, run, E.ApprovalRequested, 90, where=lambda e: e.payload["step"] == step
    )
    return next(
        e.payload["approval_id"]
        for e in events
        if e.type is E.ApprovalRequested and e.payload["step"] == step
    )


def _payloads(events: list[Any], kind: EventType) -> list[dict[str, Any]]:
    return [e.payload for e in events if e.type is kind]


def test_loan_approval_with_quorum_delegation_escalation_step_up_and_sla(
    platform: Settings, orchestrator: Service, timers: Service, api: ApiProcess
) -> None:
    set_cal = cli(platform, None, "calendar", "set", CALENDAR, "--hours", "*=00:00-24:00")
    assert set_cal.exit_code == 0, set_cal.output
    slow = loan_approval(1, expiry="60s", remind="30s", reminders=1, sla={"within": "60s"})
    fast_sla = {"business": {"calendar": CALENDAR, "duration": "2s"}, "at_risk": 0.75}
    fast = loan_approval(2, expiry="3s", remind="1s", reminders=2, sla=fast_sla)
    deploy_yaml(platform, *example_texts(), slow, fast)
    orchestrator.start()
    timers.start()
    api.start()
    responder = LoanResponder(platform).start()
    try:
        a = start_loan(platform, TENANT, "APP-A", 1)
        b = start_loan(platform, TENANT, "APP-B", 2)
        c = start_loan(platform, TENANT, "APP-C", 1)
        for run in (a, b, c):
            wait_event(platform, run, E.SignalAwaited, 90)
            upload_documents(platform, TENANT, run)
        _quorum_and_delegation(platform, api, _approval(platform, a, "underwriting"), a)
        _escalation_and_step_up(platform, api, b)
        _sla_report(platform, api, c)
    finally:
        responder.stop()


def _quorum_and_delegation(settings: Settings, api: ApiProcess, aid: str, run: str) -> None:
    inbox = cli(settings, api, "approvals", "list", "--assignee", "alice")
    assert inbox.exit_code == 0 and aid in inbox.output, inbox.output
    refused = cli(settings, api, "approve", aid, "--as", "eve", "--reason", "looks fine")
    assert refused.exit_code == 1 and "HR-APR-003" in refused.output, refused.output
    assert "not an assignee" in refused.output
    hand_over = ("--as", "alice", "--to", "dan", "--reason", "on leave")
    handed = cli(settings, api, "approvals", "delegate", aid, *hand_over)
    assert handed.exit_code == 0 and "alice handed" in handed.output, handed.output
    first = cli(settings, api, "approve", aid, "--as", "dan", "--reason", "income verified")
    assert first.exit_code == 0 and "1 of 2" in first.output, first.output
    second = cli(
        settings, api, "approve", aid, "--as", "bob", "--reason", "ok", "--data", '{"rate": 4.2}'
    )
    assert second.exit_code == 0 and "now approved" in second.output, second.output
    again = cli(settings, api, "reject", aid, "--as", "carol", "--reason", "late")
    assert again.exit_code == 1 and "HR-APR-002" in again.output  # decided: nothing sent

    events = wait_event(settings, run, E.RunCompleted, 90)
    assert _payloads(events, E.ApprovalDecisionRefused)[0]["user"] == "eve"
    (delegated,) = _payloads(events, E.ApprovalDelegated)
    assert (delegated["from"], delegated["to"], delegated["reason"]) == ("alice", "dan", "on leave")
    granted = _payloads(events, E.ApprovalGranted)
    assert [(g["user"], g["comment"]) for g in granted] == [
        ("dan", "income verified"),
        ("bob", "ok"),
    ]
    assert granted[1]["data"] == {"rate": 4.2}
    (completed,) = _payloads(events, E.RunCompleted)
    assert completed["output"]["outcome"] == "approved"
    assert completed["output"]["by"] == "underwriting"

    shown = cli(settings, api, "approvals", "show", aid)
    assert shown.exit_code == 0 and "delegated → dan" in shown.output, shown.output
    notes = notifications(settings, run)
    kinds = [n["kind"] for n in notes if n["kind"].startswith("approval.")]
    assert kinds[:3] == ["approval.requested", "approval.refused", "approval.delegated"], kinds
    (closed,) = [n for n in notes if n["kind"] == "approval.closed"]
    assert closed["details"]["status"] == "approved"
    assert sorted(closed["details"]["approved"]) == ["bob", "dan"]
    (note,) = [n for n in notes if n["kind"] == "approval.delegated"]
    assert note["approval_id"] == aid and note["recipients"] == {"users": ["dan"], "roles": []}


def _escalation_and_step_up(settings: Settings, api: ApiProcess, run: str) -> None:
    aid = _approval(settings, run, "committee-review")  # after two expiries of underwriting
    events = history(settings, run)
    assert len(_payloads(events, E.ApprovalReminderSent)) >= 1
    (escalated,) = _payloads(events, E.ApprovalEscalated)
    assert escalated["role"] == "senior-underwriters"
    assert _payloads(events, E.ApprovalExpired)[0]["step"] == "underwriting"
    assert [p["step"] for p in _payloads(events, E.SlaAtRisk)] == ["underwriting"]
    assert [p["step"] for p in _payloads(events, E.SlaBreached)] == ["underwriting"]

    member = ("--as", "carla", "--role", "credit-committee", "--reason", "affordable")
    refused = cli(settings, api, "approve", aid, *member)
    assert refused.exit_code == 1 and "second factor" in refused.output, refused.output
    granted = cli(settings, api, "approve", aid, *member, "--step-up", "otp")
    assert granted.exit_code == 0 and "now approved" in granted.output, granted.output

    events = wait_event(settings, run, E.RunCompleted, 90)
    (completed,) = _payloads(events, E.RunCompleted)
    assert completed["output"]["by"] == "committee"
    claim = [g for g in _payloads(events, E.ApprovalGranted) if g["step"] == "committee-review"]
    assert claim[0]["step_up"]["method"] == "otp"

    notes = notifications(settings, run)
    kinds = {n["kind"] for n in notes}
    assert {
        "approval.requested",
        "approval.reminder",
        "approval.escalated",
        "sla.at_risk",
        "sla.breached",
        "approval.closed",
    } <= kinds
    (up,) = [n for n in notes if n["kind"] == "approval.escalated"]
    assert up["recipients"]["roles"] == ["senior-underwriters"] and up["step"] == "underwriting"
    assert up["due"] is None and up["due_business"]["calendar"] == CALENDAR
    breach = next(n for n in notes if n["kind"] == "sla.breached")
    assert breach["workflow_type"] == "loan-approval" and breach["due"] is not None


def _sla_report(settings: Settings, api: ApiProcess, open_run: str) -> None:
    def report() -> dict[str, Any]:
        done = cli(settings, api, "sla", "report", "--type", "loan-approval", "--json")
        assert done.exit_code == 0, done.output
        body: dict[str, Any] = json.loads(done.output)
        return body

    body = wait_for(
        lambda: (
            (r := report())
            and any(p["run_id"] == open_run and p["step"] == "underwriting" for p in r["open"])
            and r
        ),
        30,
        "the open underwriting of the third run in the SLA report",
    )
    rows = {r["step"]: r for r in body["steps"]}
    uw = rows["underwriting"]
    assert (uw["ended"], uw["met"], uw["breached"]) == (2, 1, 1), uw
    assert rows["committee-review"]["met"] == 1
    assert rows[None]["ended"] == 2 and rows[None]["open"] == 1  # the runs' own SLA
    (guess,) = [p for p in body["open"] if p["run_id"] == open_run and p["step"] == "underwriting"]
    assert guess["budget_ms"] == 60_000 and guess["history"] == 2
    assert guess["verdict"] in ("unlikely", "possible", "likely", "unknown")
    table = cli(settings, api, "sla", "report", "--type", "loan-approval")
    assert table.exit_code == 0 and "underwriting" in table.output, table.output
