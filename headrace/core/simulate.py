"""Run a definition in-process against a script: a dry run for authors
(``headrace simulate``) and the test kit of the decider.

The driver plays every service: it answers tasks from the script, fires
timers, delivers scripted signals (buffering them until the run waits, as
the signal service does), approval decisions, child results and control
commands. Simulated time starts at :data:`EPOCH`; when nothing else can
happen it jumps to the next due timer or scripted moment, so a run that
waits three days finishes at once. Business-time timers are resolved as
plain durations (the calendar maths belongs to the timer service).

A script (YAML or JSON) — every part optional::

    tasks:                      # per task step name: one answer, or a list used
      charge:                   # attempt by attempt (the last one repeats)
        - {error: {code: card.declined, message: try later}, delay: 2s}
        - {result: {paid: true}}
      ship: {timeout: start_to_close}
    signals:                    # delivered `at` after the start (default 0s)
      - {signal: payment-confirmed, at: 1h, data: {ok: true}}
    approvals:                  # per approval step name
      review:
        - {user: alice, decision: approve, at: 30m}
        - {user: bob, delegate_to: carol}
    children:                   # per call step name
      kyc: {status: completed, output: {score: 700}, delay: 5m}
    control:                    # run-level commands
      - {at: 2h, command: cancel, reason: customer asked}
      - {at: 3h, command: redrive}  # every task parked in the DLQ at that moment

A task the script does not answer completes with ``{}``; a child the script
does not answer completes with ``{}``; both are listed in the notes.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from headrace.core.decider import apply, effects
from headrace.core.decider.effects import (
    ArmTimer,
    AwaitSignal,
    CancelSignalWait,
    CancelTask,
    CancelTimer,
    Effect,
    RequestApproval,
    ScheduleTask,
    StartChild,
)
from headrace.core.decider.state import State
from headrace.core.dsl.model import Definition
from headrace.core.durations import format_duration, parse_duration
from headrace.core.envelope import Command, CommandType, Event, canonical_json

EPOCH = 1_767_225_600_000  # 2026-01-01T00:00:00Z, the simulated clock's start

_CONTROL = {
    "suspend": CommandType.SuspendRun,
    "resume": CommandType.ResumeRun,
    "cancel": CommandType.CancelRun,
    "terminate": CommandType.TerminateRun,
    "update": CommandType.UpdateRunData,
}


@dataclass(frozen=True, slots=True)
class TaskAnswer:
    """How the simulated worker answers one task attempt."""

    kind: str  # "result" | "error" | "timeout"
    value: Any = None
    delay_ms: int = 0


TaskResponder = Callable[[ScheduleTask, int], TaskAnswer]


def _delay(entry: dict[str, Any], key: str = "delay") -> int:
    value = entry.get(key)
    return 0 if value in (None, 0) else parse_duration(str(value))


def task_answer(entry: Any) -> TaskAnswer:
    """One scripted answer: ``{result: ...}``, ``{error: {code, message}}``, ``{timeout: kind}``."""
    if not isinstance(entry, dict):
        raise ValueError(f"a task answer is a mapping like {{result: ...}}, not {entry!r}")
    delay = _delay(entry)
    if "error" in entry:
        err = entry["error"]
        if isinstance(err, str):
            err = {"code": err, "message": err}
        return TaskAnswer("error", err, delay)
    if "timeout" in entry:
        return TaskAnswer("timeout", entry["timeout"] or "start_to_close", delay)
    return TaskAnswer("result", entry.get("result", {}), delay)


@dataclass
class Script:
    """Scripted answers (see the module docstring for the format)."""

    tasks: dict[str, list[TaskAnswer]] = field(default_factory=dict)
    signals: list[dict[str, Any]] = field(default_factory=list)
    approvals: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    children: dict[str, dict[str, Any]] = field(default_factory=dict)
    control: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Script:
        raw = raw or {}
        unknown = set(raw) - {"tasks", "signals", "approvals", "children", "control"}
        if unknown:
            raise ValueError(
                f"unknown script section(s) {sorted(unknown)} — use tasks, signals, approvals, "
                "children, control"
            )
        tasks = {
            step: [task_answer(a) for a in (answers if isinstance(answers, list) else [answers])]
            for step, answers in (raw.get("tasks") or {}).items()
        }
        approvals = {
            step: list(v if isinstance(v, list) else [v])
            for step, v in (raw.get("approvals") or {}).items()
        }
        return cls(
            tasks,
            list(raw.get("signals") or []),
            approvals,
            dict(raw.get("children") or {}),
            list(raw.get("control") or []),
        )


@dataclass
class Simulation:
    """Drive one run of ``definition`` to its end (or until nothing more can happen)."""

    definition: Definition
    input: Any = None
    script: Script = field(default_factory=Script)
    tenant: str = "sim"
    run_id: str = "run-1"
    start: int = EPOCH
    max_commands: int = 10_000
    responder: TaskResponder | None = None  # overrides the script for every task
    state: State = field(default_factory=State)
    events: list[Event] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    _queue: list[tuple[int, int, Any]] = field(default_factory=list)
    _order: int = 0
    _task_use: dict[str, int] = field(default_factory=dict)
    _cancelled: set[str] = field(default_factory=set)
    _waits: dict[str, tuple[str, str]] = field(default_factory=dict)
    _buffered: list[dict[str, Any]] = field(default_factory=list)
    _now: int = 0

    # -- scheduling -------------------------------------------------------------

    def _push(self, at: int, item: Any) -> None:
        self._order += 1
        heapq.heappush(self._queue, (at, self._order, item))

    def _command(
        self, type_: CommandType, payload: dict[str, Any], at: int, command_id: str | None = None
    ) -> None:
        self._push(at, ("command", type_, payload, command_id))

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    # -- the loop -------------------------------------------------------------------

    def run(self) -> Simulation:
        self._command(CommandType.StartRun, {"input": self.input}, self.start, "start")
        for entry in self.script.signals:
            self._push(self.start + _delay(entry, "at"), ("signal", entry))
        for entry in self.script.control:
            self._push(self.start + _delay(entry, "at"), ("control", entry))
        sent = 0
        while self._queue and not self.state.finished and sent < self.max_commands:
            at, _, item = heapq.heappop(self._queue)
            self._now = max(self._now, at)
            kind = item[0]
            if kind == "command":
                _, type_, payload, command_id = item
                if command_id and command_id in self._cancelled:
                    continue
                self.send(type_, payload, command_id)
                sent += 1
            elif kind == "signal":
                self._signal(item[1])
            elif kind == "control":
                self._control(item[1])
        if sent >= self.max_commands:
            self._note(f"stopped after {self.max_commands} commands")
        return self

    def send(
        self, type_: CommandType, payload: dict[str, Any], command_id: str | None = None
    ) -> list[Event]:
        """Apply one command now; react to the effects of its events."""
        cmd = Command(
            command_id=command_id or f"sim-{len(self.commands) + 1}",
            tenant=self.tenant,
            run_id=self.run_id,
            type=type_,
            time=self._now,
            payload=payload,
        )
        self.commands.append(cmd)
        events = apply(self.state, cmd, self.definition)
        self.events.extend(events)
        for ev in events:
            for eff in effects(ev):
                self._react(eff)
        return events

    # -- playing the services ------------------------------------------------------

    def _react(self, eff: Effect) -> None:
        now = self._now
        if isinstance(eff, ScheduleTask):
            self._answer_task(eff)
        elif isinstance(eff, ArmTimer):
            due = eff.due
            if due is None:
                b = eff.business or {}
                span = b.get("duration_ms") or b.get("days", 0) * 86_400_000
                due = int(b.get("from", now)) + int(span)
                self._note("business time simulated as calendar time")
            self._command(CommandType.FireTimer, eff.fire.payload, due, f"{eff.id}/fire")
        elif isinstance(eff, CancelTimer | CancelTask):
            self._cancelled.add(f"{eff.id}/fire" if isinstance(eff, CancelTimer) else eff.id)
        elif isinstance(eff, AwaitSignal):
            self._waits[eff.id] = (eff.signal, eff.correlation)
            for entry in list(self._buffered):
                if self._matches(entry, eff.signal, eff.correlation):
                    self._buffered.remove(entry)
                    self._deliver(entry, eff.id)
                    break
        elif isinstance(eff, CancelSignalWait):
            self._waits.pop(eff.id, None)
        elif isinstance(eff, RequestApproval):
            self._answer_approval(eff)
        elif isinstance(eff, StartChild) and eff.wait:
            self._answer_child(eff)

    def _answer_task(self, eff: ScheduleTask) -> None:
        if self.responder is not None:
            answer = self.responder(eff, self._now)
        else:
            answers = self.script.tasks.get(eff.step)
            if not answers:
                self._note(f"task step {eff.step!r} is not in the script: completed with {{}}")
                answer = TaskAnswer("result", {})
            else:
                used = self._task_use.get(eff.step, 0)
                self._task_use[eff.step] = used + 1
                answer = answers[min(used, len(answers) - 1)]
        at = self._now + answer.delay_ms
        if answer.kind == "error":
            payload = {"task_id": eff.id, "error": answer.value}
            self._command(CommandType.FailTask, payload, at, eff.id)
        elif answer.kind == "timeout":
            self._command(
                CommandType.TimeoutTask, {"task_id": eff.id, "timeout": answer.value}, at, eff.id
            )
        else:
            self._command(
                CommandType.CompleteTask, {"task_id": eff.id, "result": answer.value}, at, eff.id
            )

    def _answer_approval(self, eff: RequestApproval) -> None:
        decisions = self.script.approvals.get(eff.step)
        if not decisions:
            self._note(f"approval {eff.step!r} has no scripted decisions: it stays open")
            return
        for entry in decisions:
            at = self._now + _delay(entry, "at")
            base = {"approval_id": eff.id, "user": entry.get("user"), "roles": entry.get("roles")}
            if entry.get("delegate_to"):
                delegation = {**base, "to": entry["delegate_to"]}
                self._command(CommandType.DelegateApproval, delegation, at)
                continue
            payload = {**base, "decision": entry.get("decision", "approve")}
            for key in ("comment", "data", "step_up"):
                if key in entry:
                    payload[key] = entry[key]
            if payload.get("step_up") is True:  # a scripted fresh second factor
                payload["step_up"] = {"method": "simulated", "at": at}
            self._command(CommandType.DecideApproval, payload, at)

    def _answer_child(self, eff: StartChild) -> None:
        step = str(eff.parent.get("step"))
        entry = self.script.children.get(step)
        if entry is None:
            self._note(f"call step {step!r} is not in the script: its child completed with {{}}")
            entry = {}
        payload = {"child_run_id": eff.id, "status": entry.get("status", "completed")}
        if payload["status"] == "completed":
            payload["output"] = entry.get("output", {})
        else:
            payload["error"] = entry.get("error") or {"code": "child", "message": "scripted"}
        self._command(CommandType.ChildFinished, payload, self._now + _delay(entry), eff.id)

    @staticmethod
    def _matches(entry: dict[str, Any], signal: str, correlation: str) -> bool:
        corr = entry.get("correlation")
        return entry.get("signal") == signal and (corr is None or str(corr) == correlation)

    def _signal(self, entry: dict[str, Any]) -> None:
        for wait_id, (signal, correlation) in self._waits.items():
            if self._matches(entry, signal, correlation):
                self._deliver(entry, wait_id)
                return
        self._buffered.append(entry)

    def _deliver(self, entry: dict[str, Any], wait_id: str) -> None:
        self._waits.pop(wait_id, None)
        payload = {"signal": entry.get("signal"), "data": entry.get("data"), "wait_id": wait_id}
        self._command(CommandType.DeliverSignal, payload, self._now)

    def _control(self, entry: dict[str, Any]) -> None:
        name = str(entry.get("command", "")).lower()
        if name == "redrive":
            parked = [i for i, (_, purpose) in self.state.pending.items() if purpose == "parked"]
            for task_id in parked:
                self._command(CommandType.RedriveTask, {"task_id": task_id}, self._now)
            return
        type_ = _CONTROL.get(name)
        if type_ is None:
            raise ValueError(
                f"unknown control command {name!r} — use {', '.join(_CONTROL)}, redrive"
            )
        payload = {k: v for k, v in entry.items() if k not in ("command", "at")}
        self._command(type_, payload, self._now)

    # -- results ----------------------------------------------------------------------

    @property
    def status(self) -> str:
        return self.state.status or "new"

    def waiting_on(self) -> list[str]:
        """What an unfinished run still waits for, e.g. ``signal wait 'review'``."""
        out = []
        for _, (flow_id, purpose) in self.state.pending.items():
            flow = self.state.flows.get(flow_id)
            out.append(f"{purpose} of step {flow.step!r}" if flow else purpose)
        return out

    def timeline(self) -> str:
        """The history as text, one event a line."""
        lines = [f"{self.definition.key} — run {self.run_id}"]
        for ev in self.events:
            offset = "+" + format_duration(ev.time - self.start)
            lines.append(f"{offset:>12} {ev.seq:>4}  {ev.type.value:<26} {describe(ev)}")
        lines.append("")
        lines.append(f"status: {self.status}")
        if self.state.outcome is not None:
            label = "output" if self.status == "completed" else "error"
            lines.append(f"{label}: {_short(self.state.outcome, 400)}")
        if not self.state.finished:
            lines.append("waiting on: " + (", ".join(self.waiting_on()) or "nothing"))
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "workflow": self.definition.key,
            "run_id": self.run_id,
            "status": self.status,
            "outcome": self.state.outcome,
            "waiting_on": [] if self.state.finished else self.waiting_on(),
            "notes": list(self.notes),
            "events": [event_dict(ev) for ev in self.events],
        }


def event_dict(ev: Event) -> dict[str, Any]:
    """An event as plain JSON (chain hashes left out)."""
    return {
        "seq": ev.seq,
        "type": ev.type.value,
        "time": ev.time,
        "event_id": ev.event_id,
        "causation_id": ev.causation_id,
        "idempotency_key": ev.idempotency_key,
        "payload": ev.payload,
    }


def _short(value: Any, limit: int = 80) -> str:
    text = canonical_json(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_SKIP = {"flow", "step", "parent", "task_id", "timer_id", "wait_id", "approval_id", "purpose"}


def describe(ev: Event) -> str:
    """One line about an event: where (flow/step) and its most telling fields."""
    p = ev.payload
    where = ""
    flow = p.get("flow")
    if p.get("step"):
        where = str(p["step"])
    if flow not in (None, "", "*") and ev.type.value not in ("BranchStarted", "IterationStarted"):
        where = f"[{flow}] {where}".strip()
    if "purpose" in p:
        where = f"{where} ({p['purpose']})".strip()
    rest = {k: v for k, v in p.items() if k not in _SKIP}
    if ev.type.value == "TaskScheduled":
        rest = {"attempt": p["attempt"], "queue": p["queue"], "input": p["input"]}
    if ev.type.value == "TimerArmed" and p.get("due") is not None:
        rest = {"in": format_duration(max(0, p["due"] - ev.time))}
    parts = [f"{k}={_short(v, 60)}" for k, v in rest.items() if v is not None]
    return (where + "  " + " ".join(parts)).strip()
