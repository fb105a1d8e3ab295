"""Evolve, part two: folding what a run waits for — task attempts, timers,
signal waits, approvals and child runs — into ``state.pending`` and the
waiting flow's ``sub``. :func:`headrace.core.decider.evolve.evolve` dispatches here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headrace.core.decider.data import canon
from headrace.core.decider.state import Flow, State
from headrace.core.envelope import Event, EventType

E = EventType
Handler = Callable[[State, dict[str, Any], Event], None]


def _pend(st: State, id_: str, flow: str, purpose: str) -> Flow:
    st.pending[id_] = [flow, purpose]
    return st.flows[flow]


def _unpend(st: State, p: dict[str, Any], key: str) -> None:
    st.pending.pop(p[key], None)


def _task_scheduled(st: State, p: dict[str, Any], ev: Event) -> None:
    sub = _pend(st, p["task_id"], p["flow"], "task").sub
    sub["task"] = p["task_id"]
    sub["attempt"] = p["attempt"]
    sub.pop("due", None)
    sub.pop("started", None)


def _task_started(st: State, p: dict[str, Any], ev: Event) -> None:
    entry = st.pending.get(p["task_id"])
    if entry is not None:
        st.flows[entry[0]].sub["started"] = True


def _task_done(st: State, p: dict[str, Any], ev: Event) -> None:
    entry = st.pending.pop(p["task_id"], None)
    if entry is not None:
        st.flows[entry[0]].sub["task"] = None


def _task_dead_lettered(st: State, p: dict[str, Any], ev: Event) -> None:
    # The step stays active: it now waits for a redrive of the dead attempt.
    _pend(st, p["task_id"], p["flow"], "parked").sub["parked"] = p["task_id"]


def _task_redriven(st: State, p: dict[str, Any], ev: Event) -> None:
    entry = st.pending.pop(p["task_id"], None)
    if entry is not None:
        sub = st.flows[entry[0]].sub
        sub.pop("parked", None)
        sub["attempt"] = 0  # the next attempt is 1: a fresh attempt budget
        sub["due"] = True  # dispatched now, or on resume while suspended


def _timer_armed(st: State, p: dict[str, Any], ev: Event) -> None:
    st.pending[p["timer_id"]] = [p["flow"], p["purpose"]]
    flow = st.flows.get(p["flow"])
    if flow is not None:
        flow.sub["t." + p["purpose"]] = p["timer_id"]


def _timer_fired(st: State, p: dict[str, Any], ev: Event) -> None:
    entry = st.pending.pop(p["timer_id"], None)
    if entry is not None and entry[1] == "retry":
        flow = st.flows.get(entry[0])
        if flow is not None:
            flow.sub["due"] = True  # the retry is due; dispatched now or on resume


def _signal_awaited(st: State, p: dict[str, Any], ev: Event) -> None:
    sub = _pend(st, p["wait_id"], p["flow"], "signal").sub
    sub["wait"] = p["wait_id"]
    sub["correlation"] = p.get("correlation")


def _approval_requested(st: State, p: dict[str, Any], ev: Event) -> None:
    sub = _pend(st, p["approval_id"], p["flow"], "approval").sub
    sub.update(
        approval=p["approval_id"],
        assignees=list(p["assignees"]),
        roles=list(p["roles"]),
        quorum=p["quorum"],
        need=p["need"],
        veto=p["veto"],
        delegation=p["delegation"],
        step_up=canon(p["step_up"]),
        expires=canon(p.get("expires")),
        decisions=[],
        escalated=False,
        reminders=0,
    )


def _approval_sub(st: State, p: dict[str, Any]) -> dict[str, Any]:
    return st.flows[st.pending[p["approval_id"]][0]].sub


def _approval_decided(st: State, p: dict[str, Any], ev: Event) -> None:
    decision = {
        "user": p["user"],
        "decision": "approve" if ev.type is E.ApprovalGranted else "reject",
        "command": ev.causation_id,
    }
    for key in ("comment", "data", "on_behalf_of"):
        if p.get(key) is not None:
            decision[key] = canon(p[key])
    _approval_sub(st, p)["decisions"].append(decision)


def _approval_delegated(st: State, p: dict[str, Any], ev: Event) -> None:
    sub = _approval_sub(st, p)
    assignees = sub["assignees"]
    if p["from"] in assignees:
        assignees[assignees.index(p["from"])] = p["to"]
    elif p["to"] not in assignees:
        assignees.append(p["to"])


def _approval_reminded(st: State, p: dict[str, Any], ev: Event) -> None:
    _approval_sub(st, p)["reminders"] = p["count"]


def _approval_escalated(st: State, p: dict[str, Any], ev: Event) -> None:
    sub = _approval_sub(st, p)
    sub["escalated"] = True
    if "expires" in p:
        sub["expires"] = canon(p["expires"])
    if p.get("role") and p["role"] not in sub["roles"]:
        sub["roles"].append(p["role"])


def _child_requested(st: State, p: dict[str, Any], ev: Event) -> None:
    _pend(st, p["child_run_id"], p["flow"], "child").sub["child"] = p["child_run_id"]


def _child_started(st: State, p: dict[str, Any], ev: Event) -> None:
    entry = st.pending.get(p["child_run_id"])
    if entry is not None:
        st.flows[entry[0]].sub["child_started"] = True


def _child_spawned(st: State, p: dict[str, Any], ev: Event) -> None:
    if p.get("cascade"):
        st.spawned.append(p["child_run_id"])


def _child_cancel(st: State, p: dict[str, Any], ev: Event) -> None:
    child = p["child_run_id"]
    st.pending.pop(child, None)
    if child in st.spawned:
        st.spawned.remove(child)


WAIT_HANDLERS: dict[EventType, Handler] = {
    E.TaskScheduled: _task_scheduled,
    E.TaskStarted: _task_started,
    E.TaskCompleted: _task_done,
    E.TaskFailed: _task_done,
    E.TaskTimedOut: _task_done,
    E.TaskCancelled: _task_done,
    E.TaskDeadLettered: _task_dead_lettered,
    E.TaskRedriven: _task_redriven,
    E.TimerArmed: _timer_armed,
    E.TimerFired: _timer_fired,
    E.TimerCancelled: lambda st, p, ev: _unpend(st, p, "timer_id"),
    E.SignalAwaited: _signal_awaited,
    E.SignalReceived: lambda st, p, ev: _unpend(st, p, "wait_id"),
    E.SignalTimedOut: lambda st, p, ev: _unpend(st, p, "wait_id"),
    E.SignalWaitCancelled: lambda st, p, ev: _unpend(st, p, "wait_id"),
    E.ApprovalRequested: _approval_requested,
    E.ApprovalGranted: _approval_decided,
    E.ApprovalRejected: _approval_decided,
    E.ApprovalDelegated: _approval_delegated,
    E.ApprovalReminderSent: _approval_reminded,
    E.ApprovalEscalated: _approval_escalated,
    E.ApprovalExpired: lambda st, p, ev: _unpend(st, p, "approval_id"),
    E.ApprovalCompleted: lambda st, p, ev: _unpend(st, p, "approval_id"),
    E.ApprovalCancelled: lambda st, p, ev: _unpend(st, p, "approval_id"),
    E.ChildStartRequested: _child_requested,
    E.ChildStarted: _child_started,
    E.ChildCompleted: lambda st, p, ev: _unpend(st, p, "child_run_id"),
    E.ChildFailed: lambda st, p, ev: _unpend(st, p, "child_run_id"),
    E.ChildSpawned: _child_spawned,
    E.ChildCancelRequested: _child_cancel,
}
