"""Parallel branches and foreach iterations: fan out into child flows, join.

A ``parallel`` step starts one child flow per branch (``BranchStarted``), each
on the data as it was when the step started. The join counts branches that
completed — and, with ``on_branch_failure: ignore``, those that failed, whose
result is then ``{"error": ...}``: ``all`` needs every branch, ``any`` one,
``n_of_m`` n. When the join is met, branches still running are cancelled
(``BranchCancelled``). With ``on_branch_failure: fail`` the first failure
cancels the others and fails the step with that branch's error; with ``wait``
the step fails with ``join.unmet`` once nothing runs and the join cannot be met.

A ``foreach`` keeps at most ``concurrency`` iterations running, starting the
next item as one finishes; results land in item order. ``on_item_failure``
works like ``on_branch_failure`` with a join of all items.
"""

from __future__ import annotations

from typing import Any

from headrace.core.decider import flows
from headrace.core.decider.context import Decision
from headrace.core.decider.errors import EXPRESSION_FAILED, JOIN_UNMET, StepError, error
from headrace.core.decider.state import Flow
from headrace.core.dsl.model import BranchFailure, ForeachStep, JoinMode, ParallelStep
from headrace.core.envelope import EventType as E


def _child_id(flow: Flow, suffix: str) -> str:
    return f"{flow.id}/{suffix}" if flow.id else suffix


# -- parallel ---------------------------------------------------------------------


def begin_parallel(d: Decision, flow: Flow, step: ParallelStep) -> None:
    for branch in step.branches:
        d.emit(
            E.BranchStarted,
            {
                "flow": _child_id(flow, f"{step.name}.{branch.name}"),
                "parent": flow.id,
                "step": step.name,
                "branch": branch.name,
                "start": branch.steps[0].name,
            },
        )


def _owner(d: Decision, child: Flow) -> tuple[Flow, Any]:
    assert child.parent is not None and child.owner is not None
    return d.state.flows[child.parent], d.ix.steps[child.owner].step


def branch_ended(d: Decision, child: Flow) -> None:
    parent, step = _owner(d, child)
    d.emit(
        E.BranchCompleted,
        {"flow": child.id, "parent": parent.id, "step": step.name, "branch": child.tag},
    )
    _join(d, parent, step)


def branch_failed(d: Decision, child: Flow, err: dict[str, Any]) -> None:
    parent, step = _owner(d, child)
    d.emit(
        E.BranchFailed,
        {
            "flow": child.id,
            "parent": parent.id,
            "step": step.name,
            "branch": child.tag,
            "error": err,
        },
    )
    if step.on_branch_failure is BranchFailure.FAIL:
        flows.cancel_flow(d, parent)
        flows.fail_step(d, parent, step.name, err)
    else:
        _join(d, parent, step)


def _needed(step: ParallelStep) -> int:
    mode = step.join.mode
    if mode is JoinMode.ALL:
        return len(step.branches)
    if mode is JoinMode.ANY:
        return 1
    return step.join.n or 1


def _join(d: Decision, flow: Flow, step: ParallelStep) -> None:
    sub = flow.sub
    ok: dict[str, Any] = sub.get("ok", {})
    failed: dict[str, Any] = sub.get("failed", {})
    ignore = step.on_branch_failure is BranchFailure.IGNORE
    count = len(ok) + (len(failed) if ignore else 0)
    if count >= _needed(step):
        flows.cancel_flow(d, flow)  # the losers
        d.emit(
            E.JoinCompleted,
            {
                "flow": flow.id,
                "step": step.name,
                "completed": [b.name for b in step.branches if b.name in ok],
                "failed": [b.name for b in step.branches if b.name in failed],
            },
        )
        flows.guard(d, flow, step, _complete_parallel)
    elif not sub.get("running"):
        flows.fail_step(
            d,
            flow,
            step.name,
            error(
                JOIN_UNMET,
                f"parallel {step.name!r} needed {_needed(step)} branches to complete, "
                f"{len(ok)} did",
                step.name,
                {"failures": dict(failed)},
            ),
        )


def _complete_parallel(d: Decision, flow: Flow, step: ParallelStep) -> None:
    sub = flow.sub
    ok: dict[str, Any] = sub.get("ok", {})
    failed: dict[str, Any] = sub.get("failed", {})
    if step.output is None and step.into is None:
        merged = dict(flow.data) if type(flow.data) is dict else {}
        for branch in step.branches:
            data = ok.get(branch.name)
            if type(data) is dict:
                merged.update(data)
        flows.complete_step(d, flow, step, merged, "")
        return
    results: dict[str, Any] = {}
    for branch in step.branches:
        if branch.name in ok:
            results[branch.name] = ok[branch.name]
        elif branch.name in failed:
            results[branch.name] = {"error": failed[branch.name]}
    if step.output is not None:
        output = d.evaluate(step.name, "output", results, flow, {"data": flow.data})
        flows.complete_step(d, flow, step, output, step.into)
    else:
        flows.complete_step(d, flow, step, results, step.into)


# -- foreach ------------------------------------------------------------------------


def begin_foreach(d: Decision, flow: Flow, step: ForeachStep) -> None:
    items = d.evaluate(step.name, "items", flow.data, flow)
    if not isinstance(items, list):
        raise StepError(
            EXPRESSION_FAILED,
            f"items of foreach {step.name!r} gave a {type(items).__name__}, not a list",
        )
    d.emit(
        E.ForeachStarted,
        {"flow": flow.id, "step": step.name, "items": items, "as": step.as_, "count": len(items)},
    )
    _refill(d, flow, step)
    _maybe_done(d, flow, step)


def _refill(d: Decision, flow: Flow, step: ForeachStep) -> None:
    sub = flow.sub
    total = len(sub["items"])
    start = step.steps[0].name
    while len(sub["running"]) < step.concurrency and sub["next"] < total:
        index = sub["next"]
        d.emit(
            E.IterationStarted,
            {
                "flow": _child_id(flow, f"{step.name}#{index}"),
                "parent": flow.id,
                "step": step.name,
                "index": index,
                "start": start,
            },
        )


def _maybe_done(d: Decision, flow: Flow, step: ForeachStep) -> None:
    sub = flow.sub
    if sub["done"] < len(sub["items"]):
        return
    failed = sub["failed"]
    if failed and step.on_item_failure is BranchFailure.WAIT:
        flows.fail_step(
            d,
            flow,
            step.name,
            error(
                JOIN_UNMET,
                f"{len(failed)} of {len(sub['items'])} iterations of {step.name!r} failed",
                step.name,
                {"failures": dict(failed)},
            ),
        )
        return
    results = list(sub["results"])
    d.emit(E.ForeachCompleted, {"flow": flow.id, "step": step.name, "count": len(results)})
    flows.guard(d, flow, step, _complete_foreach, results)


def _complete_foreach(d: Decision, flow: Flow, step: ForeachStep, results: list[Any]) -> None:
    flows.complete_step(d, flow, step, results, step.into)


def iteration_ended(d: Decision, child: Flow) -> None:
    parent, step = _owner(d, child)
    result = child.data
    if step.collect is not None:
        try:
            result = d.evaluate(step.name, "collect", child.data, child)
        except StepError as exc:
            iteration_failed(d, child, exc.payload(step.name))
            return
    d.emit(
        E.IterationCompleted,
        {
            "flow": child.id,
            "parent": parent.id,
            "step": step.name,
            "index": child.tag,
            "result": result,
        },
    )
    _refill(d, parent, step)
    _maybe_done(d, parent, step)


def iteration_failed(d: Decision, child: Flow, err: dict[str, Any]) -> None:
    parent, step = _owner(d, child)
    payload = {
        "flow": child.id,
        "parent": parent.id,
        "step": step.name,
        "index": child.tag,
        "error": err,
    }
    if step.on_item_failure is BranchFailure.IGNORE:
        payload["result"] = {"error": err}
    d.emit(E.IterationFailed, payload)
    if step.on_item_failure is BranchFailure.FAIL:
        flows.cancel_flow(d, parent)
        flows.fail_step(d, parent, step.name, err)
        return
    _refill(d, parent, step)
    _maybe_done(d, parent, step)
