"""The step kinds that need no bookkeeping of their own: choice, set,
succeed, fail, wait, wait_signal, call and spawn."""

from __future__ import annotations

from typing import Any

from headrace.core.decider import flows, timers
from headrace.core.decider.context import Decision
from headrace.core.decider.data import epoch_ms
from headrace.core.decider.errors import (
    CHILD_FAILED,
    CHOICE_UNMATCHED,
    EXPRESSION_FAILED,
    SIGNAL_TIMEOUT,
    StepError,
)
from headrace.core.decider.state import Flow
from headrace.core.dsl.graph import split_template
from headrace.core.dsl.model import (
    CallStep,
    ChildPolicy,
    ChoiceStep,
    FailStep,
    SetStep,
    SpawnStep,
    SucceedStep,
    WaitSignalStep,
    WaitStep,
)
from headrace.core.durations import parse_duration
from headrace.core.envelope import EventType as E
from headrace.core.envelope import canonical_json

# -- choice, set, succeed, fail ------------------------------------------------------


def begin_choice(d: Decision, flow: Flow, step: ChoiceStep) -> None:
    for i, rule in enumerate(step.choices):
        if d.test(step.name, f"choices[{i}].when", flow.data, flow):
            d.emit(
                E.ChoiceEvaluated,
                {"flow": flow.id, "step": step.name, "rule": i, "next": rule.next},
            )
            flows.complete_step(d, flow, step, next_=rule.next)
            return
    if step.default is None:
        raise StepError(
            CHOICE_UNMATCHED,
            f"no rule of choice {step.name!r} held and it has no default — add a `default`",
        )
    d.emit(
        E.ChoiceEvaluated,
        {"flow": flow.id, "step": step.name, "rule": "default", "next": step.default},
    )
    flows.complete_step(d, flow, step, next_=step.default)


def begin_set(d: Decision, flow: Flow, step: SetStep) -> None:
    value = d.evaluate(step.name, "value", flow.data, flow)
    flows.complete_step(d, flow, step, value, "" if step.into is None else step.into)


def begin_succeed(d: Decision, flow: Flow, step: SucceedStep) -> None:
    if step.output is None:
        flows.complete_step(d, flow, step)
    else:
        flows.complete_step(d, flow, step, d.evaluate(step.name, "output", flow.data, flow), "")


def begin_fail(d: Decision, flow: Flow, step: FailStep) -> None:
    message = step.message or f"step {step.name!r} failed with {step.error}"
    if step.message and "${" in step.message:
        parts = []
        for i, (is_expr, text) in enumerate(split_template(step.message)):
            if not is_expr:
                parts.append(text)
                continue
            value = d.evaluate(step.name, f"message[{i}]", flow.data, flow)
            parts.append(value if isinstance(value, str) else _text(value))
        message = "".join(parts)
    raise StepError(step.error, message)


def _text(value: Any) -> str:
    return "null" if value is None else canonical_json(value)


# -- wait -----------------------------------------------------------------------------


def begin_wait(d: Decision, flow: Flow, step: WaitStep) -> None:
    if step.duration is not None:
        timers.arm(d, flow.id, step.name, "wait", delay_ms=parse_duration(step.duration))
    elif step.business is not None:
        timers.arm(d, flow.id, step.name, "wait", business_time=step.business)
    else:
        due = epoch_ms(d.evaluate(step.name, "until", flow.data, flow))
        if due <= d.now:
            flows.complete_step(d, flow, step)
        else:
            timers.arm(d, flow.id, step.name, "wait", due=due)


def wait_over(d: Decision, flow: Flow, step: WaitStep) -> None:
    flows.complete_step(d, flow, step)


# -- wait_signal ------------------------------------------------------------------------


def begin_wait_signal(d: Decision, flow: Flow, step: WaitSignalStep) -> None:
    if step.correlation is None:
        key = d.command.run_id
    else:
        value = d.evaluate(step.name, "correlation", flow.data, flow)
        if value is None or isinstance(value, dict | list):
            raise StepError(
                EXPRESSION_FAILED,
                f"correlation of {step.name!r} gave {value!r}; it must give a string or number",
            )
        key = value if isinstance(value, str) else _text(value)
    wait_id = d.next_id()
    d.emit(
        E.SignalAwaited,
        {
            "wait_id": wait_id,
            "flow": flow.id,
            "step": step.name,
            "signal": step.signal,
            "correlation": key,
        },
    )
    if step.timeout is not None:
        timers.arm(d, flow.id, step.name, "signal", delay_ms=parse_duration(step.timeout))


def signal_received(d: Decision, flow: Flow, step: WaitSignalStep, wait_id: str) -> None:
    p = d.command.payload
    data = p.get("data")
    payload = {
        "wait_id": wait_id,
        "flow": flow.id,
        "step": step.name,
        "signal": step.signal,
        "correlation": flow.sub.get("correlation"),
        "data": data,
    }
    # The signal service learns from this (through the wait's cancel) which of the
    # signals it offered the wait took; the others go back to its buffer.
    if p.get("signal_id") is not None:
        payload["signal_id"] = p["signal_id"]
    d.emit(E.SignalReceived, payload)
    if step.output is not None:
        data = d.evaluate(step.name, "output", data, flow, {"data": flow.data})
    flows.complete_step(d, flow, step, data, step.into)


def signal_timed_out(d: Decision, flow: Flow, step: WaitSignalStep) -> None:
    wait_id = flow.sub.get("wait")
    d.emit(
        E.SignalTimedOut,
        {
            "wait_id": wait_id,
            "flow": flow.id,
            "step": step.name,
            "signal": step.signal,
            "correlation": flow.sub.get("correlation"),
        },
    )
    if step.on_timeout is not None:
        flows.complete_step(d, flow, step, next_=step.on_timeout)
        return
    raise StepError(
        SIGNAL_TIMEOUT,
        f"signal {step.signal!r} did not arrive within {step.timeout} — "
        "add `on_timeout` or a catch for 'signal.timeout'",
    )


def find_wait(d: Decision) -> tuple[Flow, WaitSignalStep, str] | None:
    """The wait a ``DeliverSignal`` addresses: by ``wait_id``, else the first
    wait for that signal name (and correlation key, if given)."""
    st = d.state
    p = d.command.payload
    name = p.get("signal")
    wait_id = p.get("wait_id")
    candidates = [wait_id] if wait_id else [k for k, v in st.pending.items() if v[1] == "signal"]
    for wid in candidates:
        entry = st.pending.get(wid)
        if entry is None or entry[1] != "signal":
            continue
        flow = st.flows.get(entry[0])
        if flow is None or flow.sub.get("wait") != wid:
            continue
        info = d.ix.steps.get(flow.step or "")
        if info is None:
            continue
        step = info.step
        if not isinstance(step, WaitSignalStep) or (name is not None and step.signal != name):
            continue
        corr = p.get("correlation")
        if corr is not None and not wait_id and flow.sub.get("correlation") != corr:
            continue
        return flow, step, wid
    return None


# -- call and spawn ----------------------------------------------------------------------


def _parent(d: Decision, step: str, *, wait: bool) -> dict[str, Any]:
    """Who the child reports to: ``wait`` children send ``ChildFinished`` back."""
    return {"tenant": d.command.tenant, "run_id": d.command.run_id, "step": step, "wait": wait}


def _child_input(d: Decision, flow: Flow, step: CallStep | SpawnStep) -> Any:
    if step.input is None:
        return flow.data
    return d.evaluate(step.name, "input", flow.data, flow)


def begin_call(d: Decision, flow: Flow, step: CallStep) -> None:
    child = d.next_id()
    d.emit(
        E.ChildStartRequested,
        {
            "child_run_id": child,
            "flow": flow.id,
            "step": step.name,
            "workflow": step.workflow,
            "version": step.version,
            "input": _child_input(d, flow, step),
            "cascade": step.on_parent_cancel is ChildPolicy.CASCADE,
            "parent": _parent(d, step.name, wait=True),
        },
        child,
    )


def child_started(d: Decision, flow: Flow, step: CallStep, child: str) -> None:
    if flow.sub.get("child_started"):
        return
    p = {"child_run_id": child, "flow": flow.id, "step": step.name}
    if d.command.payload.get("version") is not None:
        p["version"] = d.command.payload["version"]
    d.emit(E.ChildStarted, p)


def child_finished(d: Decision, flow: Flow, step: CallStep, child: str) -> None:
    p = d.command.payload
    status = p.get("status", "completed")
    base = {"child_run_id": child, "flow": flow.id, "step": step.name}
    if status == "completed":
        output = p.get("output")
        d.emit(E.ChildCompleted, {**base, "output": output})
        if step.output is not None:
            output = d.evaluate(step.name, "output", output, flow, {"data": flow.data})
        flows.complete_step(d, flow, step, output, step.into)
        return
    err = p.get("error")
    d.emit(E.ChildFailed, {**base, "status": status, "error": err})
    raise StepError(
        CHILD_FAILED,
        f"child run {child} ({step.workflow}) {status}"
        + (f": {err.get('code')}: {err.get('message')}" if isinstance(err, dict) else ""),
        {"status": status, "error": err},
    )


def begin_spawn(d: Decision, flow: Flow, step: SpawnStep) -> None:
    child = d.next_id()
    d.emit(
        E.ChildSpawned,
        {
            "child_run_id": child,
            "flow": flow.id,
            "step": step.name,
            "workflow": step.workflow,
            "version": step.version,
            "input": _child_input(d, flow, step),
            "cascade": step.on_parent_cancel is ChildPolicy.CASCADE,
            "parent": _parent(d, step.name, wait=False),
        },
        child,
    )
    flows.complete_step(d, flow, step, child, step.into)
