"""One decision in progress: the working state, the events so far, the clock."""

from __future__ import annotations

import hashlib
from hashlib import sha1
from typing import Any

from headrace.core.decider.errors import EXPRESSION_FAILED, StepError
from headrace.core.decider.evolve import evolve
from headrace.core.decider.state import Flow, State
from headrace.core.dsl.graph import FlowIndex, flow_index
from headrace.core.dsl.model import Definition
from headrace.core.envelope import _NS, Command, Event, EventType
from headrace.core.expr import Context
from headrace.errors import HeadraceError

MAX_STEPS_PER_DECISION = 10_000

_NS_BYTES = _NS.bytes
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def fast_event_id(tenant: str, run_id: str, seq: int) -> str:
    """Same value as :func:`headrace.core.envelope.event_id_for`, without building a UUID."""
    h = hashlib.sha1(_NS_BYTES + f"{tenant}/{run_id}#{seq}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


class Decision:
    """Deciding one command: :meth:`emit` appends an event and folds it into
    the working state at once, so each later choice sees the effect of the
    earlier ones."""

    __slots__ = (
        "_id_prefix",
        "_run",
        "budget",
        "command",
        "definition",
        "events",
        "ix",
        "now",
        "state",
        "wtype",
        "wversion",
    )

    def __init__(self, state: State, command: Command, definition: Definition) -> None:
        self.state = state
        self.command = command
        self.definition = definition
        self.ix: FlowIndex = flow_index(definition)
        self.events: list[Event] = []
        self.now = state.time if state.time > command.time else command.time
        self.budget = MAX_STEPS_PER_DECISION
        self.wtype = definition.type
        self.wversion = definition.version
        self._id_prefix = _NS_BYTES + f"{command.tenant}/{command.run_id}#".encode()
        self._run: dict[str, Any] | None = None

    @property
    def run(self) -> dict[str, Any]:
        """``$run`` of expressions: ``{id, tenant, type, version}``."""
        if self._run is None:
            cmd = self.command
            self._run = {
                "id": cmd.run_id,
                "tenant": cmd.tenant,
                "type": self.wtype,
                "version": self.wversion,
            }
        return self._run

    def emit(
        self, type_: EventType, payload: dict[str, Any], idempotency_key: str | None = None
    ) -> Event:
        """Append an event (next seq, the decision's time) and fold it into the state."""
        st = self.state
        cmd = self.command
        seq = st.last_seq + 1
        h = sha1(self._id_prefix + str(seq).encode()).hexdigest()
        ev = Event(
            cmd.tenant,
            cmd.run_id,
            self.wtype,
            self.wversion,
            seq,
            type_,
            self.now,
            cmd.command_id,
            payload,
            cmd.correlation_id,
            idempotency_key,
            cmd.traceparent,
            f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}",
        )
        evolve(st, ev)
        self.events.append(ev)
        return ev

    def next_id(self, ahead: int = 1) -> str:
        """The effect id of the event ``ahead`` places from now (1 = the next one emitted)."""
        return f"{self.command.run_id}:{self.state.last_seq + ahead}"  # envelope.effect_id

    def evaluate(
        self,
        step: str,
        field: str,
        value: Any,
        flow: Flow,
        extra: dict[str, Any] | None = None,
    ) -> Any:
        """Evaluate the expression at ``field`` of ``step`` over ``value``.

        Any failure — compile or run time — is the step's ``expression.failed``.
        """
        variables = flow.vars
        if extra:
            variables = {**variables, **extra} if variables else extra
        try:
            expr = self.ix.compiled(step, field)
            return expr.evaluate(value, Context(self.now, self.state.input, self.run, variables))
        except HeadraceError as exc:
            raise StepError(EXPRESSION_FAILED, f"step {step!r}, {field}: {exc.message}") from None
        except Exception as exc:  # libjq conversions can raise anything; never crash a run
            raise StepError(
                EXPRESSION_FAILED, f"step {step!r}, {field}: {type(exc).__name__}: {exc}"
            ) from None

    def test(self, step: str, field: str, value: Any, flow: Flow) -> bool:
        out = self.evaluate(step, field, value, flow)
        return out is not None and out is not False
