"""Moving flows along: start the step a flow is at, complete or fail it,
route failures to ``catch``, end flows, cancel what a step waits for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headrace.core.decider import approvals, fanout, lifecycle, sla, steps, tasks
from headrace.core.decider.context import Decision
from headrace.core.decider.data import check_place
from headrace.core.decider.errors import (
    CANCELLED,
    DEFINITION_INVALID,
    StepError,
    catches,
    error,
)
from headrace.core.decider.state import (
    BRANCH,
    COMPENSATION,
    ITERATION,
    READY,
    ROOT,
    Flow,
)
from headrace.core.dsl.model import ChildPolicy, Step
from headrace.core.envelope import EventType as E

Begin = Callable[[Decision, Flow, Any], None]

# Filled on first use: the step-kind modules import this one.
_BEGIN: dict[str, Begin] = {}


def _begin_table() -> dict[str, Begin]:
    if not _BEGIN:
        _BEGIN.update(
            task=tasks.begin,
            choice=steps.begin_choice,
            parallel=fanout.begin_parallel,
            foreach=fanout.begin_foreach,
            wait=steps.begin_wait,
            wait_signal=steps.begin_wait_signal,
            approval=approvals.begin,
            call=steps.begin_call,
            spawn=steps.begin_spawn,
            set=steps.begin_set,
            succeed=steps.begin_succeed,
            fail=steps.begin_fail,
        )
    return _BEGIN


_UNSET: Any = object()


def drive(d: Decision) -> None:
    """Start the steps of flows that became ready, until every flow waits.

    Nothing starts while the run is suspended: ready flows stay READY in the
    state and :func:`lifecycle.resume` queues them again.
    """
    st = d.state
    ready = st.ready
    assert ready is not None, "drive() runs inside a decision"
    i = 0
    while i < len(ready):
        if st.suspended or st.finished:
            break
        flow = st.flows.get(ready[i])
        i += 1
        if flow is None or flow.status != READY:
            continue
        d.budget -= 1
        if d.budget < 0:
            lifecycle.loop_limit(d)
            break
        start_step(d, flow)
    ready.clear()


def start_step(d: Decision, flow: Flow) -> None:
    name = flow.step
    info = d.ix.steps.get(name) if name is not None else None
    if info is None:
        err = error(DEFINITION_INVALID, f"no step named {name!r} in {d.definition.key}", name)
        d.emit(E.StepFailed, {"flow": flow.id, "step": name, "error": err})
        flow_failed(d, flow, err)
        return
    step = info.step
    d.emit(E.StepStarted, {"flow": flow.id, "step": name, "kind": step.kind})
    if step.sla is not None:
        sla.arm(d, flow.id, name, step.sla)
    guard(d, flow, step, (_BEGIN or _begin_table())[step.kind])


def guard(d: Decision, flow: Flow, step: Step, fn: Callable[..., None], *args: Any) -> None:
    """Run a step handler; a :class:`StepError` it raises fails the step."""
    try:
        fn(d, flow, step, *args)
    except StepError as exc:
        fail_step(d, flow, step.name, exc.payload(step.name))


def complete_step(
    d: Decision,
    flow: Flow,
    step: Step,
    output: Any = _UNSET,
    into: str | None = None,
    next_: Any = _UNSET,
) -> None:
    """Record ``step`` as done (placing ``output`` at ``into``) and move on.

    ``into=None`` merges an object output into the data, ``''`` replaces it.
    Raises ``StepError`` (before emitting anything) if the output cannot be placed.
    """
    payload: dict[str, Any] = {"flow": flow.id, "step": step.name}
    if output is not _UNSET:
        check_place(flow.data, into)
        payload["output"] = output
        if into is not None:
            payload["into"] = into
    nxt = d.ix.steps[step.name].successor if next_ is _UNSET else next_
    if nxt is not None:
        payload["next"] = nxt
    if step.compensate is not None:
        payload["compensate"] = step.compensate
    if flow.sub:
        release(d, flow)
    d.emit(E.StepCompleted, payload)
    if nxt is None:
        finish_flow(d, flow)


def fail_step(d: Decision, flow: Flow, name: str, err: dict[str, Any]) -> None:
    """Record the failure of step ``name``; hand it to a matching ``catch`` or fail the flow."""
    if flow.sub:
        release(d, flow)
    d.emit(E.StepFailed, {"flow": flow.id, "step": name, "error": err})
    info = d.ix.steps.get(name)
    code = err["code"]
    if info is not None and code != CANCELLED:
        for c in info.step.catch:
            if any(catches(pattern, code) for pattern in c.errors):
                payload = {"flow": flow.id, "step": name, "error": err, "next": c.next}
                if c.into:
                    payload["into"] = c.into
                d.emit(E.ErrorCaught, payload)
                return
    flow_failed(d, flow, err)


def finish_flow(d: Decision, flow: Flow) -> None:
    """A flow ran off its last step: its owner takes over."""
    kind = flow.kind
    if kind == ROOT:
        # A suspended run holds its results: it completes on resume (the root
        # flow stays ENDED in the state until then).
        if not d.state.suspended:
            lifecycle.complete_run(d)
    elif kind == BRANCH:
        fanout.branch_ended(d, flow)
    elif kind == ITERATION:
        fanout.iteration_ended(d, flow)
    elif kind == COMPENSATION:
        lifecycle.compensation_step_done(d, None)


def flow_failed(d: Decision, flow: Flow, err: dict[str, Any]) -> None:
    """A flow failed and nothing in it caught the error: its owner takes over."""
    kind = flow.kind
    if kind == ROOT:
        lifecycle.fail_run(d, err)
    elif kind == BRANCH:
        fanout.branch_failed(d, flow, err)
    elif kind == ITERATION:
        fanout.iteration_failed(d, flow, err)
    elif kind == COMPENSATION:
        lifecycle.compensation_step_done(d, err)


def release(d: Decision, flow: Flow) -> None:
    """Cancel whatever the flow's current step still waits for (not child flows)."""
    pending = d.state.pending
    for key, value in list(flow.sub.items()):
        if type(value) is not str or value not in pending:
            continue
        base = {"flow": flow.id, "step": flow.step}
        if key in ("task", "parked"):
            d.emit(E.TaskCancelled, {**base, "task_id": value})
        elif key == "wait":
            step = d.ix.steps[flow.step].step if flow.step in d.ix.steps else None
            # signal and correlation let the outbox address the cancel like the await
            d.emit(
                E.SignalWaitCancelled,
                {
                    **base,
                    "wait_id": value,
                    "signal": getattr(step, "signal", None),
                    "correlation": flow.sub.get("correlation"),
                },
            )
        elif key == "approval":
            d.emit(E.ApprovalCancelled, {**base, "approval_id": value})
        elif key == "child":
            step = d.ix.steps[flow.step].step if flow.step in d.ix.steps else None
            if getattr(step, "on_parent_cancel", None) is ChildPolicy.CASCADE:
                d.emit(E.ChildCancelRequested, {**base, "child_run_id": value})
        elif key.startswith("t."):
            d.emit(E.TimerCancelled, {**base, "timer_id": value, "purpose": key[2:]})


def cancel_flow(d: Decision, flow: Flow) -> None:
    """Cancel the flow's current step and, depth first, every flow it started."""
    running = flow.sub.get("running")
    if running:
        kind = E.BranchCancelled if "items" not in flow.sub else E.IterationCancelled
        for tag, child_id in list(running.items()):
            child = d.state.flows.get(child_id)
            if child is None:
                continue
            cancel_flow(d, child)
            payload: dict[str, Any] = {"flow": child_id, "parent": flow.id, "step": flow.step}
            if kind is E.BranchCancelled:
                payload["branch"] = tag
            else:
                payload["index"] = int(tag)
            d.emit(kind, payload)
    if flow.sub:
        release(d, flow)
