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

Parking. With ``retry.on_exhausted: park``, running out of attempts does not
fail the step: the run records ``TaskDeadLettered`` and the step keeps
waiting, now for a ``RedriveTask`` addressed to the dead attempt's task id
(pending with purpose ``parked``). The redrive records ``TaskRedriven`` and
schedules attempt 1 again — a fresh attempt budget, a new task id, the same
idempotency key — or, while the run is suspended, on resume. Anything that
abandons the step (a cancel, a failing sibling branch) cancels the parked
task like a running one. Errors that are not retryable still fail the step.
See docs/tasks.md ("Redrive semantics") for why failed runs are not reopened.
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


NON_RETRYABLE = "non_retryable"
EXHAUSTED = "exhausted"


def final_failure(
    max_attempts: int | None,
    non_retryable: list[str] | tuple[str, ...],
    attempt: int,
    code: str,
    retryable: bool | None,
) -> str | None:
    """Why failed attempt ``attempt`` is the step's last: ``non_retryable``,
    ``exhausted``, or ``None`` when the policy retries it.

    The decider acts on this; the task service asks the same question to know
    when a task goes to its DLQ (it has the policy from the task request).
    """
    if code in non_retryable or retryable is False:
        return NON_RETRYABLE
    if max_attempts is not None and attempt >= max_attempts:
        return EXHAUSTED
    return None


def _after_failure(
    d: Decision, flow: Flow, step: TaskStep, task_id: str, attempt: int, err: dict[str, Any]
) -> None:
    policy = step.retry
    code = str(err["code"])
    final = final_failure(
        policy.max_attempts, policy.non_retryable, attempt, code, err.get("retryable")
    )
    if final == NON_RETRYABLE:
        raise StepError(code, str(err.get("message") or code), err.get("details"))
    if final == EXHAUSTED and policy.on_exhausted == "park":
        d.emit(
            E.TaskDeadLettered,
            {
                "task_id": task_id,
                "flow": flow.id,
                "step": step.name,
                "attempt": attempt,
                "queue": step.queue,
                "error": err,
            },
        )
        return
    if final == EXHAUSTED:
        raise StepError(
            TASK_EXHAUSTED,
            f"step {step.name!r} failed all {attempt} attempts; last error {code}: "
            f"{err.get('message')}",
            {"attempts": attempt, "last_error": err},
        )
    delay = backoff_ms(policy, attempt, task_id)
    # A service that said when to come back (HTTP Retry-After, via the worker's
    # `details.retry_after_ms`) is not called again sooner than that.
    details = err.get("details")
    hint = details.get("retry_after_ms") if isinstance(details, dict) else None
    if isinstance(hint, int) and not isinstance(hint, bool) and hint > delay:
        delay = min(hint, _RETRY_AFTER_CAP_MS)
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


_RETRY_AFTER_CAP_MS = 24 * 3_600_000


def redriven(d: Decision, flow: Flow, step: TaskStep, task_id: str) -> None:
    """An operator redrives the parked task: attempt 1 again, now or on resume."""
    p = d.command.payload
    d.emit(
        E.TaskRedriven,
        {
            "task_id": task_id,
            "flow": flow.id,
            "step": step.name,
            "attempt": flow.sub.get("attempt", 1),
            "actor": p.get("actor") if p.get("actor") is not None else p.get("by"),
            "reason": p.get("reason"),
        },
    )
    retry_due(d, flow, step)


def retry_due(d: Decision, flow: Flow, step: TaskStep) -> None:
    """The backoff is over: schedule the next attempt (unless the run is suspended)."""
    if d.state.suspended or not flow.sub.get("due"):
        return
    schedule(d, flow, step, flow.sub.get("attempt", 1) + 1)
