"""The query API over real runs: views equal the fold of the log, every endpoint answers."""

from __future__ import annotations

import pytest
from control_kit import (
    TENANT,
    ApiProcess,
    Service,
    deploy_yaml,
    history,
    send,
    start_run,
    wait_event,
)
from support import wait_for

from headrace.core.envelope import Command, CommandType, EventType
from headrace.core.views import RunViews, run_document
from headrace.errors import ErrorCode, HeadraceError
from headrace.services.responder import Responder
from headrace.settings import Settings

pytestmark = pytest.mark.integration

SHOP = """
type: shop
version: 1
steps:
  - {name: charge, kind: task, queue: work, into: pay, compensate: refund}
  - {name: ok, kind: approval, assignees: [ann, bob], roles: [risk], expiry: 2h}
  - {name: ship, kind: task, queue: work}
compensations:
  - {name: refund, kind: task, queue: work}
"""


def _decide(settings: Settings, run_id: str, aid: str, user: str, decision: str) -> None:
    payload = {"approval_id": aid, "user": user, "decision": decision, "comment": f"{user} ok"}
    send(
        settings,
        Command(f"d-{run_id}-{user}", TENANT, run_id, CommandType.DecideApproval, 0, payload),
    )


def test_views_endpoints_and_consistency_over_real_runs(
    platform: Settings, orchestrator: Service, api: ApiProcess, responder: Responder
) -> None:
    deploy_yaml(platform, SHOP)
    orchestrator.start()
    api.start()
    runs = [start_run(platform, "shop", f"shop-{i}", input={"n": i}) for i in range(3)]
    for r in runs:
        wait_event(platform, r, EventType.ApprovalRequested)
    c = api.client()

    listed = c.get("/runs", type="shop", fresh=True)
    assert sorted(r["run_id"] for r in listed["runs"]) == runs and listed["next"] is None
    assert {r["status"] for r in listed["runs"]} == {"running"}
    assert {tuple(r["active_steps"]) for r in listed["runs"]} == {("ok",)}
    assert c.get("/runs", type="shop", status="completed")["runs"] == []
    assert c.get("/runs", type="shop", filter=".n >= 1", fresh=True)["runs"][0]["run_id"] == runs[1]
    assert len(c.get("/runs", type="shop", filter=".pay.echo.n == 2")["runs"]) == 1

    inbox = c.get("/approvals", assignee="ann")["approvals"]
    assert sorted(a["run_id"] for a in inbox) == runs
    assert len(c.get("/approvals", role="risk")["approvals"]) == 3
    assert c.get("/approvals", assignee="zed")["approvals"] == []
    aid = next(a["approval_id"] for a in inbox if a["run_id"] == runs[0])
    assert c.get(f"/approvals/{aid}")["status"] == "pending"

    _decide(platform, runs[0], aid, "ann", "approve")
    _decide(platform, runs[0], aid, "bob", "approve")
    wait_event(platform, runs[0], EventType.RunCompleted)
    done = c.run(TENANT, runs[0], min_seq=len(history(platform, runs[0])))
    assert done["status"] == "completed" and done["output"]["pay"]["echo"] == {"n": 0}
    approval = c.get(f"/approvals/{aid}", tenant=TENANT)
    assert approval["status"] == "approved"
    assert [(d["decision"], d["user"], d["reason"]) for d in approval["decisions"]] == [
        ("granted", "ann", "ann ok"),
        ("granted", "bob", "bob ok"),
    ]

    # every view equals the fold of the run's log
    for r in runs:
        folded = RunViews().fold_all(history(platform, r))
        assert c.run(TENANT, r, fresh=True) == run_document(folded.run)

    stats = c.get("/stats/runs", type="shop")
    assert stats["counts"]["completed"] == 1 and stats["counts"]["running"] == 2
    assert stats["active"] == 2 and stats["by_type"]["shop"]["running"] == 2
    steps = {s["step"]: s for s in c.get("/stats/steps", type="shop", since="1h")["steps"]}
    assert steps["charge"]["count"] == 3 and steps["ship"]["count"] == 1
    assert steps["ok"]["count"] == 1 and steps["ok"]["completed"] == 1
    one = c.get("/stats/steps", type="shop", step="charge", samples=2)["steps"][0]
    assert len(one["samples"]) == 2 and one["samples"][0]["duration_ms"] >= 0

    logged = c.get(f"/runs/{TENANT}/{runs[0]}/history", verify=True)
    assert logged["verify"]["ok"] and len(logged["events"]) == len(history(platform, runs[0]))

    position = c.position()
    assert sum(position["offsets"].values()) >= sum(len(history(platform, r)) for r in runs)
    assert c.position(fresh=True)["offsets"] == position["offsets"]
    covered = c.wait_covers({int(p): o for p, o in position["offsets"].items()}, timeout=5)
    assert covered["offsets"] == position["offsets"] == c.wait_current()["offsets"]
    assert "headrace_api_events_applied_total" in c._http.get("/metrics").text


def test_control_through_the_api_and_its_errors(
    platform: Settings, orchestrator: Service, api: ApiProcess, responder: Responder
) -> None:
    deploy_yaml(platform, SHOP)
    orchestrator.start()
    api.start()
    run = start_run(platform, "shop")
    wait_event(platform, run, EventType.ApprovalRequested)
    c = api.client()

    accepted = c.control("suspend", TENANT, run, reason="audit", actor="alice")
    assert accepted["command_id"].startswith("ctl:suspend:")
    view = c.wait_run(TENANT, run, lambda v: v["status"] == "suspended", timeout=30)
    assert view is not None and view["suspension"]["actor"] == "alice"

    with pytest.raises(HeadraceError) as missing_reason:
        c.control("resume", TENANT, run, reason=" ")
    assert missing_reason.value.code is ErrorCode.API_BAD_REQUEST
    with pytest.raises(HeadraceError) as unknown:
        c.control("resume", TENANT, "no-such-run", reason="x")
    assert unknown.value.code is ErrorCode.RUN_NOT_FOUND

    c.control("cancel", TENANT, run, reason="customer", actor="ops")
    ended = c.wait_run(TENANT, run, lambda v: v["status"] == "cancelled", timeout=60)
    assert ended is not None and ended["cancel"]["actor"] == "ops"
    kinds = [e.type for e in history(platform, run)]
    assert EventType.CompensationStepStarted in kinds  # charge's refund ran
    with pytest.raises(HeadraceError) as over:
        c.control("terminate", TENANT, run, reason="late")
    assert over.value.code is ErrorCode.COMMAND_REJECTED

    with pytest.raises(HeadraceError) as bad:
        c.get("/runs", status="sleeping")
    assert bad.value.code is ErrorCode.API_BAD_REQUEST
    with pytest.raises(HeadraceError) as behind:
        c.get("/position", min_offsets="0:999999999", timeout="200ms")
    assert behind.value.code is ErrorCode.VIEW_BEHIND
    wait_for(lambda: c.get("/healthz")["status"] == "ok", 10, "healthz")
