"""parallel (joins, branch failure modes, losers cancelled) and foreach (window, order)."""

from __future__ import annotations

from typing import Any

from decider_kit import Run, definition, of, one, simulate, task, types

from headrace.core.envelope import CommandType, EventType

E = EventType


def _parallel(n: int = 3, **kw: Any) -> dict[str, Any]:
    return {
        "name": "p",
        "kind": "parallel",
        "branches": [{"name": f"b{i}", "steps": [task(f"t{i}", into=f"r{i}")]} for i in range(n)],
        **kw,
    }


def test_join_all_merges_branch_data_in_declaration_order() -> None:
    run = Run(definition(_parallel()), {"base": 1})
    assert len(of(run.events, E.BranchStarted)) == 3
    for i in (2, 0, 1):
        run.complete(f"t{i}", {"v": i})
    assert run.state.outcome == {"base": 1, "r0": {"v": 0}, "r1": {"v": 1}, "r2": {"v": 2}}
    join = one(run.events, E.JoinCompleted)
    assert join.payload["completed"] == ["b0", "b1", "b2"]


def test_branches_do_not_see_each_others_writes() -> None:
    defn = definition(
        {
            "name": "p",
            "kind": "parallel",
            "into": "out",
            "branches": [
                {"name": "a", "steps": [{"name": "sa", "kind": "set", "value": "1", "into": "x"}]},
                {"name": "b", "steps": [{"name": "sb", "kind": "set", "value": ".x", "into": "y"}]},
            ],
        }
    )
    sim = simulate(defn, {})
    assert sim.state.outcome == {"out": {"a": {"x": 1}, "b": {"y": None}}}


def test_join_any_completes_on_the_first_branch_and_cancels_the_losers() -> None:
    run = Run(definition(_parallel(join={"mode": "any"})))
    run.complete("t1", {"v": 1})
    cancelled = of(run.last, E.BranchCancelled)
    assert sorted(e.payload["branch"] for e in cancelled) == ["b0", "b2"]
    assert len(of(run.last, E.TaskCancelled)) == 2
    assert run.state.status == "completed" and run.state.outcome == {"r1": {"v": 1}}
    assert run.state.pending == {}


def test_join_n_of_m_waits_for_n() -> None:
    run = Run(definition(_parallel(4, join={"mode": "n_of_m", "n": 2})))
    run.complete("t3")
    assert run.state.status == "running"
    run.complete("t0")
    assert run.state.status == "completed"
    assert len(of(run.last, E.BranchCancelled)) == 2


def test_branch_failure_fail_cancels_the_others_and_fails_with_its_error() -> None:
    defn = definition(
        _parallel(catch=[{"errors": ["card.declined"], "next": "handled"}]),
        {"name": "handled", "kind": "succeed"},
    )
    run = Run(defn)
    run.fail("t1", "card.declined", retryable=False)
    assert types(run.last)[:3] == ["TaskFailed", "StepFailed", "BranchFailed"]
    assert len(of(run.last, E.BranchCancelled)) == 2
    caught = one(run.last, E.ErrorCaught)
    assert caught.payload["error"]["code"] == "card.declined"
    assert run.state.status == "completed"


def test_branch_failure_ignore_records_the_error_as_the_result() -> None:
    run = Run(definition(_parallel(2, on_branch_failure="ignore", into="res")))
    run.fail("t0", "x", retryable=False)
    assert run.state.status == "running"
    run.complete("t1", {"ok": 1})
    out = run.state.outcome["res"]
    assert out["b0"]["error"]["code"] == "x" and out["b1"] == {"r1": {"ok": 1}}


def test_branch_failure_wait_lets_the_others_finish_then_fails_join_unmet() -> None:
    run = Run(definition(_parallel(3, on_branch_failure="wait")))
    run.fail("t0", "x", retryable=False)
    assert run.state.status == "running" and not of(run.last, E.BranchCancelled)
    run.complete("t1")
    run.complete("t2")
    assert run.state.outcome["code"] == "join.unmet"
    assert "b0" in run.state.outcome["details"]["failures"]


def test_wait_mode_any_join_succeeds_despite_a_failure() -> None:
    run = Run(definition(_parallel(2, on_branch_failure="wait", join={"mode": "any"})))
    run.fail("t0", "x", retryable=False)
    run.complete("t1")
    assert run.state.status == "completed"


def test_parallel_output_mapping() -> None:
    defn = definition(_parallel(2, output="[.b0.r0.v, .b1.r1.v] | add", into="sum"))
    sim = simulate(defn, {}, {"tasks": {"t0": {"result": {"v": 2}}, "t1": {"result": {"v": 3}}}})
    assert sim.state.outcome == {"sum": 5}


def _foreach(**kw: Any) -> dict[str, Any]:
    return {
        "name": "each",
        "kind": "foreach",
        "items": ".xs",
        "into": "out",
        "steps": [task("work", input="{x: .item, i: $index}")],
        **kw,
    }


def test_foreach_keeps_the_concurrency_window_and_orders_results_by_item() -> None:
    run = Run(
        definition(_foreach(concurrency=2, collect="{i: $index, v: .v}")), {"xs": [10, 20, 30]}
    )
    scheduled = of(run.events, E.TaskScheduled)
    assert [e.payload["input"] for e in scheduled] == [{"x": 10, "i": 0}, {"x": 20, "i": 1}]
    assert [e.idempotency_key for e in scheduled] == ["r1/work/0", "r1/work/1"]
    second = scheduled[1].payload["task_id"]
    run.send(CommandType.CompleteTask, {"task_id": second, "result": {"v": "b"}})
    started = one(run.last, E.IterationStarted)
    assert started.payload["index"] == 2
    run.complete("work", {"v": "c"})  # the newest attempt: item 2
    run.send(
        CommandType.CompleteTask, {"task_id": scheduled[0].payload["task_id"], "result": {"v": "a"}}
    )
    assert run.state.outcome["out"] == [{"i": 0, "v": "a"}, {"i": 1, "v": "b"}, {"i": 2, "v": "c"}]


def test_foreach_over_an_empty_list_completes_at_once() -> None:
    sim = simulate(definition(_foreach()), {"xs": []})
    assert sim.state.outcome == {"xs": [], "out": []}


def test_foreach_items_must_be_a_list() -> None:
    sim = simulate(definition(_foreach()), {"xs": {"a": 1}})
    assert sim.state.outcome["code"] == "expression.failed"


def test_foreach_item_failure_modes() -> None:
    script = {
        "tasks": {
            "work": [{"result": {}}, {"error": {"code": "bad", "retryable": False}}, {"result": {}}]
        }
    }
    fail = simulate(definition(_foreach(concurrency=1)), {"xs": [1, 2, 3]}, script)
    assert fail.state.outcome["code"] == "bad"
    assert len(of(fail.events, E.IterationStarted)) == 2
    ignore = simulate(
        definition(_foreach(concurrency=1, on_item_failure="ignore", collect=".item")),
        {"xs": [1, 2, 3]},
        script,
    )
    out = ignore.state.outcome["out"]
    assert out[0] == 1 and out[1]["error"]["code"] == "bad" and out[2] == 3
    wait = simulate(
        definition(_foreach(concurrency=1, on_item_failure="wait")), {"xs": [1, 2, 3]}, script
    )
    assert wait.state.outcome["code"] == "join.unmet"
    assert len(of(wait.events, E.IterationStarted)) == 3


def test_nested_foreach_keys_carry_every_index() -> None:
    inner = {
        "name": "inner",
        "kind": "foreach",
        "items": ".item.ys",
        "as": "y",
        "steps": [task("leaf")],
    }
    defn = definition({"name": "outer", "kind": "foreach", "items": ".xs", "steps": [inner]})
    sim = simulate(defn, {"xs": [{"ys": [1, 2]}, {"ys": [3]}]})
    keys = sorted(e.idempotency_key or "" for e in of(sim.events, E.TaskScheduled))
    assert keys == ["run-1/leaf/0/0", "run-1/leaf/0/1", "run-1/leaf/1/0"]
    assert sim.status == "completed"
