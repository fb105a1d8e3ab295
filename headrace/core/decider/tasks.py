"""Task steps: schedule attempts, take results, retry with backoff.

The decider owns retries. A ``FailTask`` or ``TimeoutTask`` for the pending
attempt records ``TaskFailed``/``TaskTimedOut``; then, if the error is
retryable and attempts remain, ``TaskRetryScheduled`` and a ``retry`` timer
whose firing schedules the next attempt (a new ``TaskScheduled`` with a new
task id and the same idempotency key). Otherwise the step fails: with the
worker's code when the error is not retryable (its code is in
``retry.non_retryable``, or the worker said ``retryable: false``), with
``task.exhausted`` when attempts ran out. Timeouts are errors with code
``timeout``; they are retried like any other unless ``timeout`` is listed as
non-retryable.

Commands address one attempt by its ``task_id`` (the effect id of its
``TaskScheduled``): a result for any attempt that is not pending — an earlier
attempt, a redelivery — changes nothing.
"""

from __future__ import annotations

from typing import Any

from headrace.core.decider import flows, timers
from headrace.core.decider.backoff import backoff_ms, policy_payload
from headrace.core.decider.context import Decision
from headrace.core.decider.errors import EXPRESSION_FAILED, TASK_EXHAUSTED, TIMEOUT, StepError
from headrace.core.decider.state import Flow
from headrace.core.dsl.model import TaskStep
from headrace.core.durations import parse_duration
from headrace.core.envelope import EventType as E


def _constants(d: Decision, step: TaskStep) -> dict[str, Any]:
    """The parts of ``TaskScheduled`` that depend only on the step (cached per definition)."""
    memo = d.ix.memo
    out = memo.get(id(step))  # the index holds the definition, so ids stay unique
    if out is None:
        t = step.timeouts
        timeouts = {
            name: parse_duration(value)
            for name, value in (
                ("schedule_to_start_ms", t.schedule_to_start),
                ("start_to_close_ms", t.start_to_close),
                ("heartbeat_ms", t.heartbeat),
            )
            if value is not None
        }
        out = {
            "queue": step.queue,
            "priority": step.priority,
            "timeouts": timeouts,
            "retry": policy_payload(step.retry),
        }
        if step.config:
            out["config"] = step.config
        memo[id(step)] = out
    return out


def begin(d: Decision, flow: Flow, step: TaskStep) -> None:
    schedule(d, flow, step, 1)


def idempotency_key(d: Decision, flow: Flow, step: TaskStep) -> str:
    """``<run_id>/<step>[/<iteration>]``, plus ``@n`` for the n-th visit of a looped step."""
    if step.idempotency_key is not None:
        key = d.evaluate(step.name, "idempotency_key", flow.data, flow)
        if not isinstance(key, str) or not key:
            raise StepError(
                EXPRESSION_FAILED,
                f"idempotency_key of {step.name!r} gave {key!r}; it must give a non-empty string",
            )
        return key
    visit = flow.visits.get(step.name, 1)
    base = f"{d.command.run_id}/{step.name}{flow.key}"
    return base if visit == 1 else f"{base}@{visit}"


def schedule(d: Decision, flow: Flow, step: TaskStep, attempt: int) -> None:
    data = flow.data
    task_input = data if step.input is None else d.evaluate(step.name, "input", data, flow)
    key = idempotency_key(d, flow, step)
    payload = {
        "flow": flow.id,
        "step": step.name,
        "task_id": d.next_id(),
        "attempt": attempt,
        "input": task_input,
        **_constants(d, step),
    }
    d.emit(E.TaskScheduled, payload, key)


def started(d: Decision, flow: Flow, step: TaskStep, task_id: str) -> None:
    if flow.sub.get("started"):
        return
    payload = {"task_id": task_id, "flow": flow.id, "step": step.name}
    worker = d.command.payload.get("worker")
    if worker is not None:
        payload["worker"] = worker
    d.emit(E.TaskStarted, payload)


def completed(d: Decision, flow: Flow, step: TaskStep, task_id: str) -> None:
    result = d.command.payload.get("result")
    d.emit(
        E.TaskCompleted,
        {
            "task_id": task_id,
            "flow": flow.id,
            "step": step.name,
            "attempt": flow.sub.get("attempt"),
            "result": result,
        },
    )
    if step.output is not None:
        result = d.evaluate(step.name, "output", result, flow, {"data": flow.data})
    flows.complete_step(d, flow, step, result, step.into)


def failed(d: Decision, flow: Flow, step: TaskStep, task_id: str) -> None:
    raw = d.command.payload.get("error")
    err: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {"message": str(raw)}
    err.setdefault("code", "task.failed")
    err.setdefault("message", "")
    attempt = flow.sub.get("attempt", 1)
    d.emit(
        E.TaskFailed,
        {"task_id": task_id, "flow": flow.id, "step": step.name, "attempt": attempt, "error": err},
    )
    _after_failure(d, flow, step, task_id, attempt, err)


def timed_out(d: Decision, flow: Flow, step: TaskStep, task_id: str) -> None:
    which = str(d.command.payload.get("timeout", "start_to_close"))
    attempt = flow.sub.get("attempt", 1)
    d.emit(
        E.TaskTimedOut,
        {
            "task_id": task_id,
            "flow": flow.id,
            "step": step.name,
            "attempt": attempt,
            "timeout": which,
        },
    )
    err = {"code": TIMEOUT, "message": f"attempt {attempt} exceeded its {which} timeout"}
    _after_failure(d, flow, step, task_id, attempt, err)


def _after_failure(
    d: Decision, flow: Flow, step: TaskStep, task_id: str, attempt: int, err: dict[str, Any]
) -> None:
    policy = step.retry
    code = str(err["code"])
    if code in policy.non_retryable or err.get("retryable") is False:
        raise StepError(code, str(err.get("message") or code), err.get("details"))
    if policy.max_attempts is not None and attempt >= policy.max_attempts:
        raise StepError(
            TASK_EXHAUSTED,
            f"step {step.name!r} failed all {attempt} attempts; last error {code}: "
            f"{err.get('message')}",
            {"attempts": attempt, "last_error": err},
        )
    delay = backoff_ms(policy, attempt, task_id)
    d.emit(
        E.TaskRetryScheduled,
        {
            "flow": flow.id,
            "step": step.name,
            "attempt": attempt + 1,
            "delay_ms": delay,
            "due": d.now + delay,
            "timer_id": d.next_id(2),
        },
    )
    timers.arm(d, flow.id, step.name, "retry", delay_ms=delay)


def retry_due(d: Decision, flow: Flow, step: TaskStep) -> None:
    """The backoff is over: schedule the next attempt (unless the run is suspended)."""
    if d.state.suspended or not flow.sub.get("due"):
        return
    schedule(d, flow, step, flow.sub.get("attempt", 1) + 1)
