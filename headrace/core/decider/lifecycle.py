"""The run as a whole: start, complete, fail, cancel, terminate, suspend,
resume, time out — and the compensation that unwinds a failed or cancelled run.

Ending a run first cancels everything it still waits for (tasks, timers,
signal waits, approvals, children started with ``on_parent_cancel: cascade``).
A failure — an uncaught step error in the main flow, or the run's ``timeout``
— then runs compensation if any completed step named one; so does a cancel
when the definition's ``on_cancel`` is ``compensate`` (the default).
Compensation runs the ``compensate`` step of every completed step, in reverse
order of completion, each on the data as it was when its step completed; a
compensation that fails is recorded (``CompensationStepFailed``) and the
unwind goes on, ending in ``CompensationFailed`` instead of
``CompensationCompleted``. Then ``RunFailed`` or ``RunCancelled``.

``TerminateRun`` ends the run at once, without compensation. ``SuspendRun``
holds the run: results, timers and signals are still recorded, but no step
starts, no retry is dispatched and the run does not complete (when its last
step ends meanwhile) until ``ResumeRun``. A cancel lifts a
suspension.

The four control commands carry ``{actor?, reason?}`` (``by`` is read as
``actor`` too) and their events record both — ``RunSuspended``,
``RunResumed``, ``RunCancelRequested`` and ``RunTerminated`` each have
``{actor, reason}`` — so a run's history says who did what and why.
"""

from __future__ import annotations

from typing import Any

import jsonschema

from headrace.core.decider import flows, sla, tasks, timers
from headrace.core.decider.context import Decision
from headrace.core.decider.data import check_place
from headrace.core.decider.errors import (
    CANCELLED,
    INPUT_INVALID,
    LOOP_LIMIT,
    TIMEOUT,
    StepError,
    error,
)
from headrace.core.decider.state import (
    COMPENSATING,
    COMPENSATION_ID,
    ENDED,
    READY,
    ROOT_ID,
    RUNNING,
)
from headrace.core.durations import parse_duration
from headrace.core.envelope import EventType as E


def start_run(d: Decision) -> None:
    p = d.command.payload
    run_input = p.get("input")
    payload: dict[str, Any] = {
        "workflow": d.definition.type,
        "version": d.definition.version,
        "input": run_input,
        "start": d.ix.start,
    }
    if p.get("parent"):
        payload["parent"] = p["parent"]
    d.emit(E.RunStarted, payload)
    schema = d.definition.input_schema
    if schema is not None:
        problem = _input_problem(run_input, schema)
        if problem is not None:
            fail_run(d, error(INPUT_INVALID, problem))
            return
    if d.definition.timeout is not None:
        timers.arm(d, timers.RUN_FLOW, None, "run", delay_ms=parse_duration(d.definition.timeout))
    if d.definition.sla is not None:
        sla.arm(d, timers.RUN_FLOW, None, d.definition.sla)


def _input_problem(value: Any, schema: dict[str, Any]) -> str | None:
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        return f"input does not match the input schema at {where}: {exc.message}"
    except jsonschema.SchemaError as exc:
        return f"the definition's input_schema is not a valid JSON Schema: {exc.message}"
    return None


def _ending(d: Decision) -> dict[str, Any]:
    return {"parent": d.state.parent} if d.state.parent else {}


def abort_all(d: Decision, *, cascade: bool = False) -> None:
    """Cancel everything the run waits for; with ``cascade`` also spawned children."""
    st = d.state
    for flow in [f for f in st.flows.values() if f.parent is None]:
        flows.cancel_flow(d, flow)
    for id_, (flow_id, purpose) in list(st.pending.items()):
        if flow_id == timers.RUN_FLOW:
            d.emit(
                E.TimerCancelled,
                {"timer_id": id_, "flow": flow_id, "step": None, "purpose": purpose},
            )
    if cascade:
        for child in list(st.spawned):
            d.emit(E.ChildCancelRequested, {"child_run_id": child, "flow": None, "step": None})


def complete_run(d: Decision) -> None:
    root = d.state.flows[ROOT_ID]
    output = root.data
    abort_all(d)
    d.emit(E.RunCompleted, {"output": output, **_ending(d)})


def fail_run(d: Decision, err: dict[str, Any]) -> None:
    abort_all(d)
    if d.state.comp:
        _start_compensation(d, "failed", err)
    else:
        d.emit(E.RunFailed, {"error": err, **_ending(d)})


def loop_limit(d: Decision) -> None:
    abort_all(d)
    d.emit(
        E.RunFailed,
        {
            "error": error(
                LOOP_LIMIT,
                "one command drove more than 10,000 steps — a loop without a wait? "
                "Add a `wait` (or a task) inside the loop",
            ),
            **_ending(d),
        },
    )


def run_timed_out(d: Decision) -> None:
    limit = d.definition.timeout
    d.emit(E.RunTimedOut, {"timeout": limit})
    if d.state.status == RUNNING:
        fail_run(d, error(TIMEOUT, f"the run exceeded its timeout of {limit}"))


def _actor(d: Decision) -> Any:
    p = d.command.payload
    return p.get("actor") if p.get("actor") is not None else p.get("by")


def _control(d: Decision) -> dict[str, Any]:
    """``{actor, reason}`` of a control command, as its event records them."""
    return {"actor": _actor(d), "reason": d.command.payload.get("reason")}


def cancel(d: Decision) -> None:
    st = d.state
    if st.status == COMPENSATING:
        return  # already unwinding
    reason = d.command.payload.get("reason") or "cancelled"
    d.emit(E.RunCancelRequested, {"reason": reason, "actor": _actor(d)})
    abort_all(d, cascade=True)
    err = error(CANCELLED, str(reason))
    if d.definition.on_cancel == "compensate" and st.comp:
        _start_compensation(d, "cancelled", err)
    else:
        d.emit(E.RunCancelled, {"error": err, **_ending(d)})


def terminate(d: Decision) -> None:
    reason = d.command.payload.get("reason") or "terminated"
    abort_all(d, cascade=True)
    err = error("terminated", str(reason))
    d.emit(E.RunTerminated, {"error": err, "reason": reason, "actor": _actor(d), **_ending(d)})


def suspend(d: Decision) -> None:
    if d.state.suspended:
        return
    d.emit(E.RunSuspended, _control(d))


def resume(d: Decision) -> None:
    """Lift a suspension: start every held step and dispatch every due retry."""
    st = d.state
    if not st.suspended:
        return
    d.emit(E.RunResumed, _control(d))
    root = st.flows.get(ROOT_ID)
    if root is not None and root.status == ENDED and not st.finished:
        complete_run(d)  # it ran off its last step while suspended
        return
    for flow in list(st.flows.values()):
        if flow.status == READY and st.ready is not None:
            st.ready.append(flow.id)
        elif flow.sub.get("due") and flow.step in d.ix.steps:
            flows.guard(d, flow, d.ix.steps[flow.step].step, tasks.retry_due)


def update_data(d: Decision) -> None:
    p = d.command.payload
    root = d.state.flows.get(ROOT_ID)
    into = p.get("into")
    if root is None or "value" not in p or not (into is None or isinstance(into, str)):
        reject(d, "UpdateRunData needs {value, into?} and a run in its main flow")
        return
    try:
        check_place(root.data, into)
    except StepError as exc:
        reject(d, exc.message)
        return
    payload = {"value": p["value"]}
    if into is not None:
        payload["into"] = into
    d.emit(E.RunDataUpdated, payload)


def marker(d: Decision) -> None:
    p = d.command.payload
    d.emit(E.MarkerRecorded, {"name": p.get("name"), "data": p.get("data")})


def reject(d: Decision, reason: str) -> None:
    """Record that a command did not apply (an audit entry; the state is unchanged)."""
    d.emit(
        E.CommandRejected,
        {"command_id": d.command.command_id, "command": d.command.type.value, "reason": reason},
    )


# -- compensation --------------------------------------------------------------------


def _start_compensation(d: Decision, reason: str, err: dict[str, Any]) -> None:
    steps = [entry[1] for entry in reversed(d.state.comp)]
    d.emit(E.CompensationStarted, {"reason": reason, "error": err, "steps": steps})
    _next_compensation(d)


def _next_compensation(d: Decision) -> None:
    st = d.state
    unwind = st.unwind
    assert unwind is not None
    pos = unwind["pos"]
    if pos >= 0:
        step, comp_step, _ = st.comp[pos]
        d.emit(E.CompensationStepStarted, {"index": pos, "step": step, "compensation": comp_step})
        return
    failed = unwind["failed"]
    if failed:
        d.emit(E.CompensationFailed, {"failed": failed})
    else:
        d.emit(E.CompensationCompleted, {})
    err = unwind["error"]
    if unwind["reason"] == "cancelled":
        d.emit(E.RunCancelled, {"error": err, **_ending(d)})
    else:
        d.emit(E.RunFailed, {"error": err, **_ending(d)})


def compensation_step_done(d: Decision, err: dict[str, Any] | None) -> None:
    flow = d.state.flows[COMPENSATION_ID]
    index = flow.tag
    if err is None:
        d.emit(E.CompensationStepCompleted, {"index": index, "compensation": flow.step})
    else:
        d.emit(E.CompensationStepFailed, {"index": index, "compensation": flow.step, "error": err})
    _next_compensation(d)
