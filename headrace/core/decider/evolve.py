"""``evolve(state, event) -> state``: fold one event into a run's state.

Evolve reads only the event (never the definition, never an expression), so
anyone holding a run's events can rebuild its state. It mutates ``state`` in
place and returns it: a run's state has one owner, and copying it per event
would cost more than the decision itself (use ``State.clone()`` to keep an old
one). Values taken from payloads go through :func:`canon`, so a state built
from decoded events equals one built live.
"""

from __future__ import annotations

from typing import Any

from headrace.core.decider.data import canon, place
from headrace.core.decider.fold_waits import WAIT_HANDLERS, Handler
from headrace.core.decider.state import (
    ACTIVE,
    BRANCH,
    CANCELLED,
    COMPENSATING,
    COMPENSATION,
    COMPENSATION_ID,
    COMPLETED,
    ENDED,
    FAILED,
    FAILED_RUN,
    ITERATION,
    READY,
    RECENT_MAX,
    ROOT,
    ROOT_ID,
    RUNNING,
    TERMINATED,
    Flow,
    State,
)
from headrace.core.envelope import ZERO_HASH, Event, EventType

E = EventType


def evolve(state: State, event: Event) -> State:
    """Apply ``event`` to ``state`` (in place) and return it."""
    handler = _HANDLERS.get(event.type)
    if handler is not None:
        handler(state, event.payload, event)
    state.last_seq = event.seq
    if event.time > state.time:
        state.time = event.time
    if event.hash != ZERO_HASH:
        state.last_hash = event.hash
    if event.type in _REMEMBER:
        remember(state, event.causation_id)
    return state


def remember(state: State, command_id: str) -> None:
    """Note a command id in the bounded list of recent ones (once per command)."""
    recent = state.recent
    if not recent or recent[-1] != command_id:
        recent.append(command_id)
        if len(recent) > RECENT_MAX:
            del recent[0]


# Events caused by commands that address nothing pending: their command ids are
# remembered (boundedly) so that a redelivery is recognised.
_REMEMBER = frozenset(
    {
        E.RunSuspended,
        E.RunResumed,
        E.RunCancelRequested,
        E.RunTerminated,
        E.RunDataUpdated,
        E.MarkerRecorded,
        E.CommandRejected,
        E.SignalReceived,
        E.ApprovalDecisionRefused,
        E.ApprovalDelegated,
    }
)


def _ready(st: State, flow: Flow, step: str) -> None:
    flow.step = step
    flow.status = READY
    flow.sub = {}
    _queue(st, flow.id)


def _queue(st: State, flow_id: str) -> None:
    if st.ready is not None:  # a decision is running and will start it
        st.ready.append(flow_id)


def _end_run(st: State, status: str, outcome: Any) -> None:
    st.status = status
    st.outcome = canon(outcome)
    st.flows.clear()
    st.pending.clear()
    st.comp.clear()
    st.unwind = None
    st.suspended = False


# -- run ------------------------------------------------------------------------


def _run_started(st: State, p: dict[str, Any], ev: Event) -> None:
    st.tenant = ev.tenant
    st.run_id = ev.run_id
    st.wtype = ev.workflow_type
    st.wversion = ev.workflow_version
    st.status = RUNNING
    st.input = canon(p.get("input"))
    st.parent = canon(p.get("parent"))
    root = Flow(ROOT_ID, ROOT, p["start"], st.input)
    st.flows[ROOT_ID] = root
    _queue(st, ROOT_ID)


def _run_completed(st: State, p: dict[str, Any], ev: Event) -> None:
    _end_run(st, COMPLETED, p.get("output"))


def _run_failed(st: State, p: dict[str, Any], ev: Event) -> None:
    _end_run(st, FAILED_RUN, p.get("error"))


def _run_cancelled(st: State, p: dict[str, Any], ev: Event) -> None:
    _end_run(st, CANCELLED, p.get("error"))


def _run_terminated(st: State, p: dict[str, Any], ev: Event) -> None:
    _end_run(st, TERMINATED, p.get("error"))


def _suspended(st: State, p: dict[str, Any], ev: Event) -> None:
    st.suspended = True


def _resumed(st: State, p: dict[str, Any], ev: Event) -> None:
    st.suspended = False


def _data_updated(st: State, p: dict[str, Any], ev: Event) -> None:
    root = st.flows.get(ROOT_ID)
    if root is not None:
        root.data = place(root.data, canon(p.get("value")), p.get("into"))


# -- steps ----------------------------------------------------------------------


def _step_started(st: State, p: dict[str, Any], ev: Event) -> None:
    flow = st.flows[p["flow"]]
    step = p["step"]
    flow.step = step
    flow.status = ACTIVE
    flow.visits[step] = flow.visits.get(step, 0) + 1
    flow.sub = {}


def _step_completed(st: State, p: dict[str, Any], ev: Event) -> None:
    flow = st.flows[p["flow"]]
    if "output" in p:
        flow.data = place(flow.data, canon(p["output"]), p.get("into"))
    comp = p.get("compensate")
    if comp is not None:
        st.comp.append([p["step"], comp, flow.data])
    nxt = p.get("next")
    if nxt is not None:
        _ready(st, flow, nxt)
    else:
        flow.status = ENDED
        flow.sub = {}


def _step_failed(st: State, p: dict[str, Any], ev: Event) -> None:
    flow = st.flows[p["flow"]]
    flow.status = FAILED
    flow.sub = {}


def _error_caught(st: State, p: dict[str, Any], ev: Event) -> None:
    flow = st.flows[p["flow"]]
    into = p.get("into")
    if into:
        flow.data = place(flow.data, canon(p["error"]), into)
    _ready(st, flow, p["next"])


# -- parallel and foreach ---------------------------------------------------------


def _branch_started(st: State, p: dict[str, Any], ev: Event) -> None:
    parent = st.flows[p["parent"]]
    visit = parent.visits.get(p["step"], 1)
    key = parent.key + (f"/@{visit}" if visit > 1 else "")
    child = Flow(
        p["flow"],
        BRANCH,
        p["start"],
        parent.data,
        parent=parent.id,
        owner=p["step"],
        tag=p["branch"],
        key=key,
        vars=parent.vars,
    )
    st.flows[child.id] = child
    parent.sub.setdefault("running", {})[p["branch"]] = child.id
    _queue(st, child.id)


def _branch_done(st: State, p: dict[str, Any], ev: Event) -> None:
    child = st.flows.pop(p["flow"])
    sub = st.flows[p["parent"]].sub
    sub["running"].pop(p["branch"], None)
    if ev.type is E.BranchCompleted:
        sub.setdefault("ok", {})[p["branch"]] = child.data
    elif ev.type is E.BranchFailed:
        sub.setdefault("failed", {})[p["branch"]] = canon(p["error"])


def _foreach_started(st: State, p: dict[str, Any], ev: Event) -> None:
    flow = st.flows[p["flow"]]
    items = canon(p["items"])
    flow.sub = {
        "items": items,
        "as": p["as"],
        "next": 0,
        "running": {},
        "results": [None] * len(items),
        "done": 0,
        "failed": {},
    }


def _iteration_started(st: State, p: dict[str, Any], ev: Event) -> None:
    parent = st.flows[p["parent"]]
    sub = parent.sub
    index = p["index"]
    item = sub["items"][index]
    base = parent.data
    data = dict(base) if type(base) is dict else {}
    data[sub["as"]] = item
    visit = parent.visits.get(p["step"], 1)
    key = f"{parent.key}/{index}" + (f"@{visit}" if visit > 1 else "")
    child = Flow(
        p["flow"],
        ITERATION,
        p["start"],
        data,
        parent=parent.id,
        owner=p["step"],
        tag=index,
        key=key,
        vars={"index": index, "item": item},
    )
    st.flows[child.id] = child
    sub["running"][str(index)] = child.id
    sub["next"] = index + 1
    _queue(st, child.id)


def _iteration_done(st: State, p: dict[str, Any], ev: Event) -> None:
    st.flows.pop(p["flow"])
    sub = st.flows[p["parent"]].sub
    index = p["index"]
    sub["running"].pop(str(index), None)
    if ev.type is E.IterationCancelled:
        return
    sub["done"] += 1
    if ev.type is E.IterationFailed:
        sub["failed"][str(index)] = canon(p["error"])
    if "result" in p:
        sub["results"][index] = canon(p["result"])


# -- compensation ----------------------------------------------------------------------------


def _compensation_started(st: State, p: dict[str, Any], ev: Event) -> None:
    st.flows.clear()
    st.pending.clear()
    st.status = COMPENSATING
    st.unwind = {
        "reason": p["reason"],
        "error": canon(p.get("error")),
        "pos": len(st.comp) - 1,
        "failed": 0,
    }


def _compensation_step_started(st: State, p: dict[str, Any], ev: Event) -> None:
    index = p["index"]
    comp_step = st.comp[index][1]
    repeats = sum(1 for entry in st.comp[index + 1 :] if entry[1] == comp_step)
    flow = Flow(
        COMPENSATION_ID,
        COMPENSATION,
        comp_step,
        st.comp[index][2],
        tag=index,
        key=f"@{repeats + 1}" if repeats else "",
    )
    st.flows[COMPENSATION_ID] = flow
    _queue(st, COMPENSATION_ID)


def _compensation_step_done(st: State, p: dict[str, Any], ev: Event) -> None:
    st.flows.pop(COMPENSATION_ID, None)
    for id_ in [k for k, v in st.pending.items() if v[0] == COMPENSATION_ID]:
        del st.pending[id_]
    assert st.unwind is not None
    st.unwind["pos"] = p["index"] - 1
    if ev.type is E.CompensationStepFailed:
        st.unwind["failed"] += 1


_HANDLERS: dict[EventType, Handler] = {
    **WAIT_HANDLERS,
    E.RunStarted: _run_started,
    E.RunCompleted: _run_completed,
    E.RunFailed: _run_failed,
    E.RunCancelled: _run_cancelled,
    E.RunTerminated: _run_terminated,
    E.RunSuspended: _suspended,
    E.RunResumed: _resumed,
    E.RunCancelRequested: _resumed,  # a cancel lifts a suspension: the unwind must run
    E.RunDataUpdated: _data_updated,
    E.StepStarted: _step_started,
    E.StepCompleted: _step_completed,
    E.StepFailed: _step_failed,
    E.ErrorCaught: _error_caught,
    E.BranchStarted: _branch_started,
    E.BranchCompleted: _branch_done,
    E.BranchFailed: _branch_done,
    E.BranchCancelled: _branch_done,
    E.ForeachStarted: _foreach_started,
    E.IterationStarted: _iteration_started,
    E.IterationCompleted: _iteration_done,
    E.IterationFailed: _iteration_done,
    E.IterationCancelled: _iteration_done,
    E.CompensationStarted: _compensation_started,
    E.CompensationStepStarted: _compensation_step_started,
    E.CompensationStepCompleted: _compensation_step_done,
    E.CompensationStepFailed: _compensation_step_done,
}
