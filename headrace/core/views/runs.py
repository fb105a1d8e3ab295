"""The run summary: one JSON document per run, folded from its events.

This is what the query API serves for ``/runs``: who the run is, where it
stands (status, active steps, children, the last operator action), its input,
current data and outcome. A view is a plain ``dict`` (JSON-ready, stored as
canonical JSON); :func:`new_run` makes one and :func:`fold_run` folds one event
into it in place.

Redeliveries: a view remembers ``last_seq``; an event at or below it is
already reflected and :func:`fold_run` ignores it, so folding a run's log with
duplicates (at-least-once) gives the view of the log without them.

Schema (every key always present):

==================  ===============================================================
``tenant``          tenant of the run
``run_id``          the run id
``type``            workflow type
``version``         workflow version the run executes
``status``          ``running`` | ``suspended`` | ``compensating`` | ``completed`` |
                    ``failed`` | ``cancelled`` | ``terminated``
``started_at``      epoch ms of ``RunStarted`` (logical run time, as on the events)
``updated_at``      epoch ms of the last event
``ended_at``        epoch ms of the terminal event, else null
``last_seq``        seq of the last event folded
``events``          how many distinct events were folded
``correlation_id``  of the run's commands (inherited by children), or null
``parent``          ``{tenant, run_id, step, wait}`` for a child run, else null
``children``        child run id → ``{run_id, step, workflow, version, mode: call|spawn,
                    cascade, status, requested_at, ended_at}``; child ``status`` is
                    ``requested`` (call), ``spawned``, ``started``, ``completed``,
                    ``failed``, ``cancelled``, ``terminated`` or ``cancel_requested``
``input``           the run input
``data``            the run data (the main flow's data; what jq filters see)
``output``          the result of a completed run, else null
``error``           ``{code, message, ...}`` of a failed, cancelled or terminated run
``active_steps``    flow id → ``{step, kind, since, at_risk, breached, sla}``: steps
                    started and not yet ended (``""`` is the main flow); ``sla`` is
                    ``{due, business}`` of the step's SLA (``due`` null for business
                    time), or null when the step has none
``approvals``       flow id → approval id of the approvals open in the run
``suspension``      ``{actor, reason, at}`` while suspended, else null
``cancel``          ``{actor, reason, at}`` once a cancel was requested, else null
``control``         the last 20 control actions ``{op, actor, reason, at, seq}``
                    (op: suspend, resume, cancel, terminate)
``sla``             ``{at_risk, breached, due, business}`` of the run's own SLA (``due``
                    and ``business`` null without one)
``timed_out``       the run hit its ``timeout``
==================  ===============================================================
"""

from __future__ import annotations

from typing import Any

from headrace.core.decider.data import canon, place
from headrace.core.envelope import Event, EventType

E = EventType

RUNNING = "running"
SUSPENDED = "suspended"
COMPENSATING = "compensating"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
TERMINATED = "terminated"

STATUSES = (RUNNING, SUSPENDED, COMPENSATING, COMPLETED, FAILED, CANCELLED, TERMINATED)
ACTIVE = frozenset({RUNNING, SUSPENDED, COMPENSATING})
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, TERMINATED})
CONTROL_KEPT = 20

_ENDS = {
    E.RunCompleted: COMPLETED,
    E.RunFailed: FAILED,
    E.RunCancelled: CANCELLED,
    E.RunTerminated: TERMINATED,
    E.RunContinuedAsNew: COMPLETED,
}

ROOT_FLOW = ""


def new_run(event: Event) -> dict[str, Any]:
    """An empty view of the run ``event`` belongs to (before any event is folded)."""
    return {
        "tenant": event.tenant,
        "run_id": event.run_id,
        "type": event.workflow_type,
        "version": event.workflow_version,
        "status": RUNNING,
        "started_at": event.time,
        "updated_at": event.time,
        "ended_at": None,
        "last_seq": 0,
        "events": 0,
        "correlation_id": event.correlation_id,
        "parent": None,
        "children": {},
        "input": None,
        "data": None,
        "output": None,
        "error": None,
        "active_steps": {},
        "approvals": {},
        "suspension": None,
        "cancel": None,
        "control": [],
        "sla": {"at_risk": False, "breached": False, "due": None, "business": None},
        "timed_out": False,
    }


def fold_run(view: dict[str, Any], event: Event) -> list[dict[str, Any]] | None:
    """Fold ``event`` into ``view`` in place; the step samples it closed.

    Returns ``None`` (and leaves the view alone) when the event is already
    reflected (``seq <= last_seq``). A sample is ``{tenant, run_id, type,
    version, flow, step, kind, started_at, ended_at, duration_ms, outcome,
    at_risk, breached, sla, seq}`` for a step that ended (``sla``: the step had
    one) (``StepCompleted`` →
    ``completed``, ``StepFailed`` → ``failed``).
    """
    if event.seq <= view["last_seq"]:
        return None
    samples: list[dict[str, Any]] = []
    handler = _HANDLERS.get(event.type)
    if handler is not None:
        handler(view, event.payload, event, samples)
    view["last_seq"] = event.seq
    view["events"] += 1
    if event.time > view["updated_at"]:
        view["updated_at"] = event.time
    return samples


# -- the run -----------------------------------------------------------------------


def _started(v: dict[str, Any], p: dict[str, Any], ev: Event, out: list[Any]) -> None:
    v["status"] = RUNNING
    v["started_at"] = ev.time
    v["version"] = ev.workflow_version
    v["correlation_id"] = ev.correlation_id
    v["input"] = canon(p.get("input"))
    v["data"] = v["input"]
    v["parent"] = canon(p.get("parent"))


def _ended(v: dict[str, Any], p: dict[str, Any], ev: Event, out: list[Any]) -> None:
    v["status"] = _ENDS[ev.type]
    v["ended_at"] = ev.time
    v["active_steps"] = {}
    v["approvals"] = {}
    v["suspension"] = None
    if ev.type is E.RunCompleted:
        v["output"] = canon(p.get("output"))
    elif ev.type is not E.RunContinuedAsNew:
        v["error"] = canon(p.get("error"))
    if ev.type is E.RunTerminated:
        _control(v, "terminate", p, ev)


def _control(v: dict[str, Any], op: str, p: dict[str, Any], ev: Event) -> dict[str, Any]:
    entry = {"op": op, "actor": p.get("actor"), "reason": p.get("reason"), "at": ev.time}
    kept = v["control"]
    kept.append({**entry, "seq": ev.seq})
    del kept[:-CONTROL_KEPT]
    return {k: entry[k] for k in ("actor", "reason", "at")}


def _suspended(v: dict[str, Any], p: dict[str, Any], ev: Event, out: list[Any]) -> None:
    v["suspension"] = _control(v, "suspend", p, ev)
    if v["status"] == RUNNING:
        v["status"] = SUSPENDED


def _resumed(v: dict[str, Any], p: dict[str, Any], ev: Event, out: list[Any]) -> None:
    _control(v, "resume", p, ev)
    v["suspension"] = None
    if v["status"] == SUSPENDED:
        v["status"] = RUNNING


def _cancel_requested(v: dict[str, Any], p: dict[str, Any], ev: Event, out: list[Any]) -> None:
    v["cancel"] = _control(v, "cancel", p, ev)
    v["suspension"] = None  # a cancel lifts a suspension (the unwind must run)
    if v["status"] == SUSPENDED:
        v["status"] = RUNNING


def _compensating(v: dict[str, Any], p: dict[str, Any], ev: Event, out: list[Any]) -> None:
    v["status"] = COMPENSATING
    v["active_steps"] = {}
    v["approvals"] = {}


def _timed_out(v: dict[str, Any], p: dict[str, Any], ev: Event, out: list[Any]) -> None:
    v["timed_out"] = True


def _data_updated(v: dict[str, Any], p: dict[str, Any], ev: Event, out: list[Any]) -> None:
    v["data"] = place(v["data"], canon(p.get("value")), p.get("into"))


# -- steps ---------------------------------------------------------------------------


def _step_started(v: dict[str, Any], p: dict[str, Any], ev: Event, out: list[Any]) -> None:
    v["active_steps"][p["flow"]] = {
        "step": p["step"],
        "kind": p.get("kind"),
        "since": ev.time,
        "at_risk": False,
        "breached": False,
        "sla": None,
    }


def _step_ended(v: dict[str, Any], p: dict[str, Any], ev: Event, out: list[Any]) -> None:
    flow = p["flow"]
    active = v["active_steps"].get(flow)
    if active is not None and active["step"] == p.get("step"):
        del v["active_steps"][flow]
        out.append(
            {
                "tenant": ev.tenant,
                "run_id": ev.run_id,
                "type": ev.workflow_type,
                "version": ev.workflow_version,
                "flow": flow,
                "step": active["step"],
                "kind": active["kind"],
                "started_at": active["since"],
                "ended_at": ev.time,
                "duration_ms": max(0, ev.time - active["since"]),
                "outcome": "completed" if ev.type is E.StepCompleted else "failed",
                "at_risk": active["at_risk"],
                "breached": active["breached"],
                "sla": active.get("sla") is not None,
                "seq": ev.seq,
            }
        )
    if flow == ROOT_FLOW and ev.type is E.StepCompleted and "output" in p:
        v["data"] = place(v["data"], canon(p["output"]), p.get("into"))


def _error_caught(v: dict[str, Any], p: dict[str, Any], ev: Event, out: list[Any]) -> None:
    if p.get("flow") == ROOT_FLOW and p.get("into"):
        v["data"] = place(v["data"], canon(p.get("error")), p["into"])


def _flow_gone(v: dict[str, Any], p: dict[str, Any], ev: Event, out: list[Any]) -> None:
    """A branch or iteration ended: forget its steps and those of flows nested in it."""
    gone = p.get("flow")
    if not isinstance(gone, str):
        return
    nested = gone + "/"
    for table in (v["active_steps"], v["approvals"]):
        for flow in [f for f in table if f == gone or f.startswith(nested)]:
            del table[flow]


def _timer_armed(v: dict[str, Any], p: dict[str, Any], ev: Event, out: list[Any]) -> None:
    """An SLA's breach timer says when the SLA of the run or of a step ends."""
    if p.get("purpose") != "sla_breach":
        return
    sla = {"due": p.get("due"), "business": canon(p.get("business"))}
    if p.get("step") is None:
        v["sla"].update(sla)
        return
    active = v["active_steps"].get(p.get("flow"))
    if active is not None and active["step"] == p["step"]:
        active["sla"] = sla


def _sla(v: dict[str, Any], p: dict[str, Any], ev: Event, out: list[Any]) -> None:
    key = "at_risk" if ev.type is E.SlaAtRisk else "breached"
    if p.get("scope") == "run" or p.get("step") is None:
        v["sla"][key] = True
        return
    for active in v["active_steps"].values():
        if active["step"] == p["step"]:
            active[key] = True


# -- children and approvals ---------------------------------------------------------------


def _child(v: dict[str, Any], p: dict[str, Any], ev: Event, out: list[Any]) -> None:
    spawned = ev.type is E.ChildSpawned
    v["children"][p["child_run_id"]] = {
        "run_id": p["child_run_id"],
        "step": p.get("step"),
        "workflow": p.get("workflow"),
        "version": p.get("version"),
        "mode": "spawn" if spawned else "call",
        "cascade": bool(p.get("cascade")),
        "status": "spawned" if spawned else "requested",
        "requested_at": ev.time,
        "ended_at": None,
    }


def _child_status(v: dict[str, Any], p: dict[str, Any], ev: Event, out: list[Any]) -> None:
    child = v["children"].get(p.get("child_run_id"))
    if child is None:
        return
    if ev.type is E.ChildStarted:
        child["status"] = "started"
        if p.get("version") is not None:
            child["version"] = p["version"]
    elif ev.type is E.ChildCancelRequested:
        child["status"] = "cancel_requested"
    else:
        child["status"] = "completed" if ev.type is E.ChildCompleted else p.get("status", "failed")
        child["ended_at"] = ev.time


def _approval_opened(v: dict[str, Any], p: dict[str, Any], ev: Event, out: list[Any]) -> None:
    v["approvals"][p["flow"]] = p["approval_id"]


def _approval_closed(v: dict[str, Any], p: dict[str, Any], ev: Event, out: list[Any]) -> None:
    flow = p.get("flow")
    if v["approvals"].get(flow) == p.get("approval_id"):
        del v["approvals"][flow]


_HANDLERS = {
    E.RunStarted: _started,
    E.RunCompleted: _ended,
    E.RunFailed: _ended,
    E.RunCancelled: _ended,
    E.RunTerminated: _ended,
    E.RunContinuedAsNew: _ended,
    E.RunSuspended: _suspended,
    E.RunResumed: _resumed,
    E.RunCancelRequested: _cancel_requested,
    E.RunTimedOut: _timed_out,
    E.RunDataUpdated: _data_updated,
    E.CompensationStarted: _compensating,
    E.StepStarted: _step_started,
    E.StepCompleted: _step_ended,
    E.StepFailed: _step_ended,
    E.ErrorCaught: _error_caught,
    E.BranchCompleted: _flow_gone,
    E.BranchFailed: _flow_gone,
    E.BranchCancelled: _flow_gone,
    E.IterationCompleted: _flow_gone,
    E.IterationFailed: _flow_gone,
    E.IterationCancelled: _flow_gone,
    E.SlaAtRisk: _sla,
    E.SlaBreached: _sla,
    E.TimerArmed: _timer_armed,
    E.ChildStartRequested: _child,
    E.ChildSpawned: _child,
    E.ChildStarted: _child_status,
    E.ChildCompleted: _child_status,
    E.ChildFailed: _child_status,
    E.ChildCancelRequested: _child_status,
    E.ApprovalRequested: _approval_opened,
    E.ApprovalCompleted: _approval_closed,
    E.ApprovalExpired: _approval_closed,
    E.ApprovalCancelled: _approval_closed,
}


def run_row(view: dict[str, Any]) -> dict[str, Any]:
    """The short form of a view for lists: the input but no data or output; lists, not maps."""
    return {
        "tenant": view["tenant"],
        "run_id": view["run_id"],
        "type": view["type"],
        "version": view["version"],
        "status": view["status"],
        "started_at": view["started_at"],
        "updated_at": view["updated_at"],
        "ended_at": view["ended_at"],
        "last_seq": view["last_seq"],
        "parent": view["parent"],
        "input": view["input"],
        "children": len(view["children"]),
        "active_steps": sorted({a["step"] for a in view["active_steps"].values()}),
        "error": view["error"],
        "suspension": view["suspension"],
    }


def run_document(view: dict[str, Any]) -> dict[str, Any]:
    """The full form of a view for ``GET /runs/{tenant}/{run_id}``: maps become lists."""
    doc = dict(view)
    doc["children"] = list(view["children"].values())
    doc["active_steps"] = [{"flow": f, **a} for f, a in view["active_steps"].items()]
    doc["approvals"] = sorted(view["approvals"].values())
    return doc
