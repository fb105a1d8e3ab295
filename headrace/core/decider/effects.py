"""Effects: what the world must do because of an event, read off the event alone.

The orchestrator calls :func:`effects` on every event it appends — and again
on events it folds during replay, so an effect may be emitted more than once.
Every effect carries an ``id`` derived from ``(run_id, seq)`` of the event
that asked for it (``envelope.effect_id``); the task, timer and signal
services dedupe on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from headrace.core.envelope import Command, CommandType, Event, EventType, effect_id

E = EventType


@dataclass(frozen=True, slots=True)
class Effect:
    """Base of all effects: ``id`` is the dedupe key, ``tenant``/``run_id`` the run."""

    id: str
    tenant: str
    run_id: str


@dataclass(frozen=True, slots=True)
class ScheduleTask(Effect):
    """Dispatch one task attempt to ``tasks.<queue>``."""

    workflow_type: str
    step: str
    attempt: int
    queue: str
    input: Any
    priority: int
    timeouts: dict[str, int]
    retry: dict[str, Any]
    idempotency_key: str
    config: dict[str, Any] = field(default_factory=dict)
    traceparent: str | None = None  # the TaskScheduled event's: the worker continues the trace


@dataclass(frozen=True, slots=True)
class CancelTask(Effect):
    """Stop waiting for a task attempt (tell the worker if it can be told)."""


@dataclass(frozen=True, slots=True)
class ArmTimer(Effect):
    """Keep a timer; when due, send ``fire`` (a ``FireTimer`` command) to the run.

    ``due`` is epoch ms, or ``None`` with ``business`` = ``{calendar,
    duration_ms | days, from}`` for the timer service to resolve. ``deadline``
    (SLA timers) goes back to the run on the ``FireTimer`` command."""

    purpose: str
    due: int | None
    business: dict[str, Any] | None
    deadline: int | None = None
    traceparent: str | None = None  # the arming event's: a retry or timeout continues the trace

    @property
    def fire(self) -> Command:
        """The command to send when the timer is due (its id is stable: ``<timer id>/fire``)."""
        payload: dict[str, Any] = {"timer_id": self.id}
        if self.deadline is not None:
            payload["deadline"] = self.deadline
        return Command(
            command_id=f"{self.id}/fire",
            tenant=self.tenant,
            run_id=self.run_id,
            type=CommandType.FireTimer,
            time=self.due or 0,
            payload=payload,
            traceparent=self.traceparent,
        )


@dataclass(frozen=True, slots=True)
class CancelTimer(Effect):
    pass


@dataclass(frozen=True, slots=True)
class AwaitSignal(Effect):
    """Register a wait: deliver ``signal`` for ``correlation`` to the run with this wait id."""

    signal: str
    correlation: str
    time: int = 0  # the run's logical time when it began to wait


@dataclass(frozen=True, slots=True)
class CancelSignalWait(Effect):
    """The wait ended: ``reason`` is ``received`` (by signal ``signal_id``, when the
    delivery named one), ``timed_out`` or ``cancelled``. ``signal`` and
    ``correlation`` are the wait's, so the cancel reaches where the await went."""

    signal: str | None = None
    correlation: str | None = None
    reason: str = "cancelled"
    signal_id: str | None = None


@dataclass(frozen=True, slots=True)
class StartChild(Effect):
    """Start child run ``id`` (``version`` ``None``: the latest deployed when it starts);
    ``wait`` children report back with ``ChildFinished``."""

    workflow: str
    version: int | None
    input: Any
    parent: dict[str, Any]
    wait: bool
    time: int = 0  # the parent's logical time when it asked
    correlation_id: str | None = None  # inherited from the parent
    traceparent: str | None = None  # inherited from the parent


@dataclass(frozen=True, slots=True)
class CancelChild(Effect):
    """Cancel child run ``id`` (a ``CancelRun`` command to it)."""


@dataclass(frozen=True, slots=True)
class RequestApproval(Effect):
    """Put an approval in the assignees' inboxes."""

    step: str
    assignees: list[str]
    roles: list[str]
    quorum: str
    form: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class NotifyApprovers(Effect):
    """Remind or escalate: ``kind`` is ``reminder`` or ``escalated``."""

    approval_id: str
    kind: str
    users: list[str]
    roles: list[str]


@dataclass(frozen=True, slots=True)
class WithdrawApproval(Effect):
    pass


@dataclass(frozen=True, slots=True)
class Notify(Effect):
    """Tell people something about a run: one message on the ``notifications`` topic.

    ``id`` is the effect id of the event (``<run_id>:<seq>``), the same on every
    replay, so a consumer dedupes on it. ``kind`` is one of :data:`NOTIFICATION_KINDS`;
    ``users``/``roles`` are the recipients (empty: whoever watches the run);
    ``due`` is when the approval expires or the SLA ends (epoch ms, null when unknown
    or business time — then ``due_business`` says which calendar span)."""

    kind: str
    workflow_type: str
    workflow_version: int
    step: str | None
    time: int
    approval_id: str | None = None
    users: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    due: int | None = None
    due_business: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)


NOTIFICATION_KINDS = (
    "approval.requested",
    "approval.reminder",
    "approval.escalated",
    "approval.delegated",
    "approval.refused",
    "approval.closed",
    "sla.at_risk",
    "sla.breached",
)


@dataclass(frozen=True, slots=True)
class NotifyParent(Effect):
    """Tell the parent run that this child finished: ``command`` is its ``ChildFinished``."""

    command: Command


def _base(ev: Event, id_: str) -> dict[str, str]:
    return {"id": id_, "tenant": ev.tenant, "run_id": ev.run_id}


def _schedule(ev: Event, p: dict[str, Any]) -> list[Effect]:
    return [
        ScheduleTask(
            **_base(ev, p["task_id"]),
            workflow_type=ev.workflow_type,
            step=p["step"],
            attempt=p["attempt"],
            queue=p["queue"],
            input=p["input"],
            priority=p["priority"],
            timeouts=p["timeouts"],
            retry=p["retry"],
            idempotency_key=ev.idempotency_key or "",
            config=p.get("config") or {},
            traceparent=ev.traceparent,
        )
    ]


def _arm(ev: Event, p: dict[str, Any]) -> list[Effect]:
    return [
        ArmTimer(
            **_base(ev, p["timer_id"]),
            purpose=p["purpose"],
            due=p.get("due"),
            business=p.get("business"),
            deadline=p.get("deadline"),
            traceparent=ev.traceparent,
        )
    ]


def _child(ev: Event, p: dict[str, Any], wait: bool) -> list[Effect]:
    return [
        StartChild(
            **_base(ev, p["child_run_id"]),
            workflow=p["workflow"],
            version=p.get("version"),
            input=p.get("input"),
            parent=p["parent"],
            wait=wait,
            time=ev.time,
            correlation_id=ev.correlation_id,
            traceparent=ev.traceparent,
        )
    ]


def _note(
    ev: Event,
    kind: str,
    *,
    users: Any = (),
    roles: Any = (),
    expires: dict[str, Any] | None = None,
    due: int | None = None,
    due_business: dict[str, Any] | None = None,
    **details: Any,
) -> Notify:
    p = ev.payload
    if expires:
        due, due_business = expires.get("due"), expires.get("business")
    return Notify(
        id=effect_id(ev.run_id, ev.seq),
        tenant=ev.tenant,
        run_id=ev.run_id,
        kind=kind,
        workflow_type=ev.workflow_type,
        workflow_version=ev.workflow_version,
        step=p.get("step"),
        time=ev.time,
        approval_id=p.get("approval_id"),
        users=tuple(users or ()),
        roles=tuple(roles or ()),
        due=due,
        due_business=due_business,
        details={k: v for k, v in details.items() if v is not None},
    )


def _approval(ev: Event, p: dict[str, Any]) -> list[Effect]:
    request = RequestApproval(
        **_base(ev, p["approval_id"]),
        step=p["step"],
        assignees=p["assignees"],
        roles=p["roles"],
        quorum=p["quorum"],
        form=p.get("form"),
    )
    note = _note(
        ev,
        "approval.requested",
        users=p["assignees"],
        roles=p["roles"],
        expires=p.get("expires"),
        quorum=p["quorum"],
        need=p.get("need"),
        veto=p.get("veto"),
        delegation=p.get("delegation"),
        step_up=bool(p.get("step_up")),
        form=p.get("form"),
    )
    return [request, note]


def _notify(ev: Event, p: dict[str, Any]) -> list[Effect]:
    escalated = ev.type is E.ApprovalEscalated
    users = [] if escalated else p.get("to", [])
    roles = [p["role"]] if escalated else p.get("roles", [])
    notify = NotifyApprovers(
        **_base(ev, f"{p['approval_id']}/{ev.seq}"),
        approval_id=p["approval_id"],
        kind="escalated" if escalated else "reminder",
        users=users,
        roles=roles,
    )
    if escalated:
        note = _note(ev, "approval.escalated", roles=roles, expires=p.get("expires"))
    else:
        note = _note(
            ev,
            "approval.reminder",
            users=users,
            roles=roles,
            expires=p.get("expires"),
            count=p.get("count"),
        )
    return [notify, note]


def _closed(ev: Event, p: dict[str, Any], status: str | None = None) -> list[Effect]:
    detail: dict[str, Any] = {"status": status or p.get("outcome")}
    if ev.type is E.ApprovalCompleted:
        detail.update(approved=p.get("approved"), rejected=p.get("rejected"))
    return [
        WithdrawApproval(**_base(ev, p["approval_id"])),
        _note(ev, "approval.closed", **detail),
    ]


def _sla(ev: Event, p: dict[str, Any]) -> list[Effect]:
    kind = "sla.at_risk" if ev.type is E.SlaAtRisk else "sla.breached"
    return [
        _note(
            ev,
            kind,
            due=p.get("deadline"),
            scope=p.get("scope"),
            within=p.get("within"),
            business=p.get("business"),
            at_risk=p.get("at_risk"),
        )
    ]


def _wait_ended(ev: Event, p: dict[str, Any], reason: str) -> list[Effect]:
    return [
        CancelSignalWait(
            **_base(ev, p["wait_id"]),
            signal=p.get("signal"),
            # Events written before they carried it: the default correlation (the run id).
            correlation=p.get("correlation") or ev.run_id,
            reason=reason,
            signal_id=p.get("signal_id"),
        )
    ]


_STATUS = {
    E.RunCompleted: "completed",
    E.RunFailed: "failed",
    E.RunCancelled: "cancelled",
    E.RunTerminated: "terminated",
}


def _ended(ev: Event, p: dict[str, Any]) -> list[Effect]:
    parent = p.get("parent")
    if not parent or not parent.get("wait"):
        return []
    payload: dict[str, Any] = {"child_run_id": ev.run_id, "status": _STATUS[ev.type]}
    if ev.type is E.RunCompleted:
        payload["output"] = p.get("output")
    else:
        payload["error"] = p.get("error")
    command = Command(
        command_id=f"{ev.run_id}/finished",
        tenant=parent["tenant"],
        run_id=parent["run_id"],
        type=CommandType.ChildFinished,
        time=ev.time,
        payload=payload,
        causation_id=ev.event_id,
        correlation_id=ev.correlation_id,
        traceparent=ev.traceparent,
    )
    return [
        NotifyParent(
            id=command.command_id, tenant=parent["tenant"], run_id=parent["run_id"], command=command
        )
    ]


_READERS: dict[EventType, Callable[[Event, dict[str, Any]], list[Effect]]] = {
    E.TaskScheduled: _schedule,
    E.TaskCancelled: lambda ev, p: [CancelTask(**_base(ev, p["task_id"]))],
    E.TimerArmed: _arm,
    E.TimerCancelled: lambda ev, p: [CancelTimer(**_base(ev, p["timer_id"]))],
    E.SignalAwaited: lambda ev, p: [
        AwaitSignal(
            **_base(ev, p["wait_id"]),
            signal=p["signal"],
            correlation=p["correlation"],
            time=ev.time,
        )
    ],
    E.SignalReceived: lambda ev, p: _wait_ended(ev, p, "received"),
    E.SignalTimedOut: lambda ev, p: _wait_ended(ev, p, "timed_out"),
    E.SignalWaitCancelled: lambda ev, p: _wait_ended(ev, p, "cancelled"),
    E.ChildStartRequested: lambda ev, p: _child(ev, p, True),
    E.ChildSpawned: lambda ev, p: _child(ev, p, False),
    E.ChildCancelRequested: lambda ev, p: [CancelChild(**_base(ev, p["child_run_id"]))],
    E.ApprovalRequested: _approval,
    E.ApprovalReminderSent: _notify,
    E.ApprovalEscalated: _notify,
    E.ApprovalDelegated: lambda ev, p: [
        _note(
            ev,
            "approval.delegated",
            users=[p["to"]],
            **{"from": p.get("from"), "to": p["to"], "reason": p.get("reason")},
        )
    ],
    E.ApprovalDecisionRefused: lambda ev, p: [
        _note(
            ev,
            "approval.refused",
            users=[p["user"]] if isinstance(p.get("user"), str) else [],
            user=p.get("user"),
            reason=p.get("reason"),
        )
    ],
    E.ApprovalCompleted: lambda ev, p: _closed(ev, p),
    E.ApprovalExpired: lambda ev, p: _closed(ev, p, "expired"),
    E.ApprovalCancelled: lambda ev, p: _closed(ev, p, "cancelled"),
    E.SlaAtRisk: _sla,
    E.SlaBreached: _sla,
    E.RunCompleted: _ended,
    E.RunFailed: _ended,
    E.RunCancelled: _ended,
    E.RunTerminated: _ended,
}


def effects(event: Event) -> list[Effect]:
    """The effects ``event`` asks for (none for most events)."""
    reader = _READERS.get(event.type)
    if reader is None:
        return []
    out: list[Effect] = reader(event, event.payload)
    return out
