"""Shared helpers for the decider tests: build definitions, run them, read events."""

from __future__ import annotations

from typing import Any

from headrace.core.decider import State, apply
from headrace.core.dsl.model import Definition
from headrace.core.envelope import Command, CommandType, Event, EventType
from headrace.core.simulate import EPOCH, Script, Simulation


def task(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "kind": "task", "queue": kw.pop("queue", "work"), **kw}


def definition(*steps: dict[str, Any], **kw: Any) -> Definition:
    return Definition.model_validate({"type": "t", "version": 1, "steps": list(steps), **kw})


def simulate(
    defn: Definition, input: Any = None, script: dict[str, Any] | None = None, **kw: Any
) -> Simulation:
    return Simulation(
        defn, input if input is not None else {}, Script.from_dict(script), **kw
    ).run()


def types(events: list[Event]) -> list[str]:
    return [e.type.value for e in events]


def of(events: list[Event], type_: EventType) -> list[Event]:
    return [e for e in events if e.type is type_]


def one(events: list[Event], type_: EventType) -> Event:
    found = of(events, type_)
    assert len(found) == 1, f"expected one {type_.value}, got {types(events)}"
    return found[0]


class Run:
    """A hand-driven run: send commands one by one and look at the events."""

    def __init__(self, defn: Definition, input: Any = None, run_id: str = "r1") -> None:
        self.defn = defn
        self.state = State()
        self.run_id = run_id
        self.events: list[Event] = []
        self.now = EPOCH
        self.n = 0
        self.last = self.send(CommandType.StartRun, {"input": input if input is not None else {}})

    def command(
        self, type_: CommandType, payload: dict[str, Any], cid: str | None = None
    ) -> Command:
        self.n += 1
        return Command(cid or f"c{self.n}", "t1", self.run_id, type_, self.now, payload)

    def send(
        self, type_: CommandType, payload: dict[str, Any] | None = None, cid: str | None = None
    ) -> list[Event]:
        self.last = apply(self.state, self.command(type_, payload or {}, cid), self.defn)
        self.events.extend(self.last)
        return self.last

    def at(self, ms: int) -> Run:
        self.now = EPOCH + ms
        return self

    def task_id(self, step: str) -> str:
        """The pending attempt of task step ``step``."""
        for ev in reversed(self.events):
            if ev.type is EventType.TaskScheduled and ev.payload["step"] == step:
                return str(ev.payload["task_id"])
        raise AssertionError(f"no TaskScheduled for {step}: {types(self.events)}")

    def timer_id(self, purpose: str) -> str:
        for ev in reversed(self.events):
            if ev.type is EventType.TimerArmed and ev.payload["purpose"] == purpose:
                return str(ev.payload["timer_id"])
        raise AssertionError(f"no {purpose} timer: {types(self.events)}")

    def complete(self, step: str, result: Any = None) -> list[Event]:
        return self.send(
            CommandType.CompleteTask, {"task_id": self.task_id(step), "result": result or {}}
        )

    def fail(self, step: str, code: str = "boom", **err: Any) -> list[Event]:
        error = {"code": code, "message": f"{step} failed", **err}
        return self.send(CommandType.FailTask, {"task_id": self.task_id(step), "error": error})

    def fire(self, purpose: str) -> list[Event]:
        return self.send(CommandType.FireTimer, {"timer_id": self.timer_id(purpose)})

    def id_of(self, type_: EventType, key: str) -> str:
        for ev in reversed(self.events):
            if ev.type is type_:
                return str(ev.payload[key])
        raise AssertionError(f"no {type_.value}: {types(self.events)}")
