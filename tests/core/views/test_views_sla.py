"""SLA bookkeeping in the views, the SLA report and the breach prediction."""

from __future__ import annotations

from decider_kit import Run, definition, task

from headrace.core.envelope import CommandType, EventType
from headrace.core.simulate import EPOCH
from headrace.core.views import RunViews, may_decide
from headrace.core.views.sla import ended_run, open_items, predict, report

E = EventType
C = CommandType


def test_active_steps_and_the_run_know_their_sla_and_samples_say_whether_they_had_one() -> None:
    defn = definition(task("a", sla={"within": "1h"}), task("b"), sla={"within": "1d"})
    run = Run(defn)
    v = RunViews().fold_all(run.events)
    assert v.run is not None
    assert v.run["sla"]["due"] == EPOCH + 86_400_000
    (active,) = v.run["active_steps"].values()
    assert active["sla"] == {"due": EPOCH + 3_600_000, "business": None}
    run.at(1_000).complete("a")
    v.fold_all(run.last)
    assert [s["sla"] for s in v.samples] == [True]
    (active,) = v.run["active_steps"].values()
    assert active["step"] == "b" and active["sla"] is None
    items = open_items(v.run)
    assert [(i["step"], i["due"]) for i in items] == [(None, EPOCH + 86_400_000)]
    run.at(2_000).complete("b")
    v.fold_all(run.last)
    assert ended_run(v.run) == {
        "type": "t",
        "step": None,
        "duration_ms": 2_000,
        "at_risk": False,
        "breached": False,
        "status": "completed",
    }
    business = Run(definition(task("a", sla={"business": {"calendar": "eu", "days": 1}})))
    (active,) = RunViews().fold_all(business.events).run["active_steps"].values()  # type: ignore[index]
    assert active["sla"]["due"] is None and active["sla"]["business"]["calendar"] == "eu"


def test_prediction_reads_past_runs_that_got_as_far_as_this_one() -> None:
    history = sorted([10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    # 35 in, 60 allowed: of the 7 past runs that took > 35, 4 took > 60
    p = predict(35, 60, history)
    assert (p["basis"], p["probability"], p["verdict"]) == (7, round(4 / 7, 3), "likely")
    assert p["expected_ms"] == 70 and p["p90_ms"] == 100
    assert predict(5, 95, history)["verdict"] == "possible"  # 1 of 10 took longer than 95
    assert predict(5, 200, history)["verdict"] == "unlikely"
    assert predict(61, 60, history)["verdict"] == "breached"
    assert predict(1, 60, [], breached=False)["verdict"] == "unknown"
    assert predict(1, None, history)["verdict"] == "unknown"  # business time: no deadline yet
    beyond = predict(150, 300, history)
    assert beyond["verdict"] == "unknown" and beyond["beyond_history"]
    assert predict(1, 60, history, breached=True)["verdict"] == "breached"


def test_report_counts_met_near_misses_and_breaches_and_predicts_open_ones() -> None:
    ended = [
        {"type": "loan", "step": "uw", "duration_ms": 10, "at_risk": False, "breached": False},
        {"type": "loan", "step": "uw", "duration_ms": 50, "at_risk": True, "breached": False},
        {"type": "loan", "step": "uw", "duration_ms": 90, "at_risk": True, "breached": True},
        {"type": "loan", "step": None, "duration_ms": 500, "at_risk": False, "breached": False},
    ]
    now = 1_000
    live = [
        {
            "type": "loan",
            "step": "uw",
            "tenant": "acme",
            "run_id": "r9",
            "flow": "",
            "since": now - 45,
            "due": now + 15,
            "at_risk": True,
            "breached": False,
        }
    ]
    rows, predictions = report(ended, live, {("loan", "uw"): [10, 50, 90]}, now)
    run_row, uw = rows
    assert (run_row["step"], run_row["scope"], run_row["met"]) == (None, "run", 1)
    assert {k: uw[k] for k in ("ended", "met", "at_risk", "breached", "met_ratio")} == {
        "ended": 3,
        "met": 2,
        "at_risk": 1,
        "breached": 1,
        "met_ratio": 0.6667,
    }
    assert (uw["p50_ms"], uw["open"], uw["open_at_risk"], uw["predicted_breaches"]) == (
        50,
        1,
        1,
        1,
    )
    (p,) = predictions
    # 45 in, 60 allowed: the past runs that took > 45 are 50 and 90; one went past 60
    assert (p["run_id"], p["verdict"], p["probability"], p["basis"]) == ("r9", "likely", 0.5, 2)


def test_inboxes_follow_serial_turns_and_leave_out_who_decided() -> None:
    step = {"name": "ok", "kind": "approval", "assignees": ["ann", "bob"], "quorum": "serial"}
    run = Run(definition(step))
    aid = run.id_of(E.ApprovalRequested, "approval_id")
    rec = next(iter(RunViews().fold_all(run.events).approvals.values()))
    assert may_decide(rec, "ann", []) and not may_decide(rec, "bob", [])
    run.send(C.DecideApproval, {"approval_id": aid, "user": "ann", "decision": "approve"})
    rec = next(iter(RunViews().fold_all(run.events).approvals.values()))
    assert not may_decide(rec, "ann", []) and may_decide(rec, "bob", [])


def test_business_time_deadlines_are_resolved_by_the_caller() -> None:
    item = {
        "type": "loan",
        "step": "uw",
        "tenant": "acme",
        "run_id": "r1",
        "flow": "",
        "since": 0,
        "due": None,
        "business": {"calendar": "eu", "days": 2, "from": 0},
        "at_risk": False,
        "breached": False,
    }
    _, (unresolved,) = report([], [dict(item)], {("loan", "uw"): [10, 20]}, 5)
    assert unresolved["verdict"] == "unknown" and unresolved["budget_ms"] is None
    asked: list[dict[str, object]] = []

    def resolve(business: dict[str, object]) -> int:
        asked.append(business)
        return 15

    _, (p,) = report([], [dict(item)], {("loan", "uw"): [10, 20]}, 5, resolve)
    assert asked == [item["business"]] and p["due"] == 15 and p["budget_ms"] == 15
    assert (p["verdict"], p["probability"]) == ("likely", 0.5)  # 10 and 20 ran > 5; 20 > 15
