"""``decide(state, command, definition) -> [events]`` and its in-place twin ``apply``.

Idempotency. A command changes a run at most once:

* commands that address something the run waits for — a task attempt
  (``task_id``), a timer (``timer_id``), a signal wait (``wait_id``), an
  approval (``approval_id``), a child run (``child_run_id``) — apply only while
  it is pending; once applied it is not, so a redelivery (or a result for an
  older attempt) yields nothing. Approval decisions are pending per user and
  remember their command ids while the approval is open;
* every other command (suspend, resume, cancel, terminate, data updates,
  markers, signals without ``wait_id``) is remembered in a bounded list of
  recent command ids kept in the state (the last 64);
* a command for a run that has not started (other than ``StartRun``), has
  finished, or already started (``StartRun`` again) yields nothing.

A command that addresses nothing pending yields **no events**: under
at-least-once delivery these are mostly redeliveries, and recording each
would make the log grow with every retry of a producer. Only a command that
is malformed or not supported is recorded, as ``CommandRejected`` (an audit
entry; the run's state is unchanged). An unknown or stale result never
changes run state.

Command payloads (what the services send):

=====================  ==========================================================
``StartRun``           ``{input, parent?: {tenant, run_id, step, wait}}``
``TaskStarted``        ``{task_id, worker?}``
``CompleteTask``       ``{task_id, result, attempt?}``
``FailTask``           ``{task_id, error: {code, message, retryable?, details?}, attempt?}``
``TimeoutTask``        ``{task_id, timeout: schedule_to_start | start_to_close | heartbeat}``
``RedriveTask``        ``{task_id, actor?, reason?}`` — ``task_id`` of a parked (dead-lettered)
                       attempt
``FireTimer``          ``{timer_id}``
``DeliverSignal``      ``{signal, data, wait_id?, correlation?, signal_id?}``
``DecideApproval``     ``{approval_id, user, decision: approve | reject, roles?, comment?,
                       data?, step_up?, on_behalf_of?}``
``DelegateApproval``   ``{approval_id, user, to, roles?}``
``ChildStarted``       ``{child_run_id, version?}``
``ChildFinished``      ``{child_run_id, status: completed | failed | cancelled |
                       terminated, output? | error?}``
``SuspendRun`` ...     ``{actor?, reason?}`` (also ``ResumeRun``, ``CancelRun``,
                       ``TerminateRun``; ``by`` is read as ``actor``)
``UpdateRunData``      ``{value, into?}`` (placed like a step result, on the main flow)
``RecordMarker``       ``{name, data}``
=====================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Callable

from headrace.core.decider import approvals, flows, lifecycle, sla, steps, tasks, timers
from headrace.core.decider.context import Decision
from headrace.core.decider.state import Flow, State
from headrace.core.dsl.model import Definition
from headrace.core.envelope import Command, CommandType, Event
from headrace.core.envelope import EventType as E

C = CommandType


def decide(state: State, command: Command, definition: Definition) -> list[Event]:
    """The events ``command`` causes; ``state`` is left untouched."""
    return apply(state.clone(), command, definition)


def apply(state: State, command: Command, definition: Definition) -> list[Event]:
    """Decide ``command`` and fold the events into ``state`` in place (the hot path).

    The orchestrator seals the returned events, writes them, then calls
    ``state.seal(last_event.hash)`` and snapshots ``state``. If this raises
    (a bug), ``state`` may be half-updated: reload it from the snapshot.
    """
    st = state
    if st.started:
        if st.finished or command.command_id in st.recent:
            return []
        handler = _HANDLERS.get(command.type, _not_supported)
    elif command.type is C.StartRun:
        handler = lifecycle.start_run
    else:
        return []
    d = Decision(st, command, definition)
    st.ready = []
    try:
        handler(d)
        flows.drive(d)
    finally:
        st.ready = None
    return d.events


def _pending(d: Decision, key: str, purpose: str) -> tuple[Flow, object, str] | None:
    id_ = d.command.payload.get(key)
    if not isinstance(id_, str):
        return None
    entry = d.state.pending.get(id_)
    if entry is None or entry[1] != purpose:
        return None
    flow = d.state.flows.get(entry[0])
    # the flow must still wait for this very id (an abandoned child's entry can
    # outlive its flow, whose id a later loop may reuse)
    if flow is None or flow.sub.get(_SUB_KEY[purpose]) != id_ or flow.step not in d.ix.steps:
        return None
    return flow, d.ix.steps[flow.step].step, id_


_SUB_KEY = {
    "task": "task",
    "parked": "parked",
    "child": "child",
    "approval": "approval",
    "signal": "wait",
}


def _on_task(fn: Callable[..., None]) -> Callable[[Decision], None]:
    def handle(d: Decision) -> None:
        found = _pending(d, "task_id", "task")
        if found is None:
            return
        flow, step, task_id = found
        attempt = d.command.payload.get("attempt")
        if attempt is not None and attempt != flow.sub.get("attempt"):
            return  # a result for another attempt
        flows.guard(d, flow, step, fn, task_id)  # type: ignore[arg-type]

    return handle


_TIMER_PURPOSES: dict[str, Callable[..., None]] = {
    "wait": steps.wait_over,
    "retry": tasks.retry_due,
    "signal": steps.signal_timed_out,
    "expiry": approvals.expired,
    "remind": approvals.remind,
}


def _fire_timer(d: Decision) -> None:
    timer_id = d.command.payload.get("timer_id")
    entry = d.state.pending.get(timer_id) if isinstance(timer_id, str) else None
    if entry is None:
        return
    flow_id, purpose = entry
    flow = d.state.flows.get(flow_id)
    d.emit(
        E.TimerFired,
        {
            "timer_id": timer_id,
            "flow": flow_id,
            "step": flow.step if flow else None,
            "purpose": purpose,
        },
    )
    if purpose == "run":
        lifecycle.run_timed_out(d)
        return
    if purpose in (sla.RISK, sla.BREACH):
        run_level = flow_id == timers.RUN_FLOW or flow is None
        sla.fired(d, purpose, None if run_level or flow is None else flow.step)
        return
    if flow is None or flow.step not in d.ix.steps:
        return
    flows.guard(d, flow, d.ix.steps[flow.step].step, _TIMER_PURPOSES[purpose])


def _deliver_signal(d: Decision) -> None:
    found = steps.find_wait(d)
    if found is not None:
        flow, step, wait_id = found
        flows.guard(d, flow, step, steps.signal_received, wait_id)


def _on_pending(key: str, purpose: str, fn: Callable[..., None]) -> Callable[[Decision], None]:
    def handle(d: Decision) -> None:
        found = _pending(d, key, purpose)
        if found is not None:
            flow, step, id_ = found
            flows.guard(d, flow, step, fn, id_)  # type: ignore[arg-type]

    return handle


def _not_supported(d: Decision) -> None:
    lifecycle.reject(d, f"{d.command.type.value} is not supported by this decider yet")


_HANDLERS: dict[CommandType, Callable[[Decision], None]] = {
    C.StartRun: lambda d: None,  # the run exists already
    C.CompleteTask: _on_task(tasks.completed),
    C.FailTask: _on_task(tasks.failed),
    C.TimeoutTask: _on_task(tasks.timed_out),
    C.TaskStarted: _on_task(tasks.started),
    C.FireTimer: _fire_timer,
    C.DeliverSignal: _deliver_signal,
    C.DecideApproval: _on_pending("approval_id", "approval", approvals.decided),
    C.DelegateApproval: _on_pending("approval_id", "approval", approvals.delegated),
    C.ChildStarted: _on_pending("child_run_id", "child", steps.child_started),
    C.ChildFinished: _on_pending("child_run_id", "child", steps.child_finished),
    C.SuspendRun: lifecycle.suspend,
    C.ResumeRun: lifecycle.resume,
    C.CancelRun: lifecycle.cancel,
    C.TerminateRun: lifecycle.terminate,
    C.UpdateRunData: lifecycle.update_data,
    C.RecordMarker: lifecycle.marker,
    # A redrive of a task that is not parked (any more) yields nothing, like any
    # stale command: it cannot be told from a redelivery of one that applied.
    C.RedriveTask: _on_pending("task_id", "parked", tasks.redriven),
    C.MigrateRun: _not_supported,
}
