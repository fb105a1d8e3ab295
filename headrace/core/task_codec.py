"""The task protocol's two messages, to bytes and back: ``TaskDispatch`` and ``TaskResult``.

A worker in any language reads :class:`TaskDispatch` records from
``tasks.<queue>`` and writes :class:`TaskResult` records to ``task-results``
(docs/tasks.md). Both are Avro single-object encoded with the schemas in
``schemas/avro/`` (``task_dispatch.avsc``, ``task_result.avsc``), through the
same :class:`~headrace.core.codec.Codec` as events and commands; JSON values
(input, output, config, error details, progress) travel as JSON text inside
the records, so a reader needs nothing beyond Avro and JSON.

The helpers :func:`started`, :func:`heartbeat`, :func:`completed` and
:func:`failed` build the results of a dispatch, and :func:`result_target`
says where to produce them (topic, key, partition — echoed from the dispatch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from headrace.core.codec import _millis, default_codec
from headrace.core.envelope import canonical_json
from headrace.core.schemas import TASK_DISPATCH, TASK_RESULT
from headrace.errors import ErrorCode, HeadraceError


class DispatchKind(StrEnum):
    """What a ``tasks.<queue>`` record asks of a worker."""

    DISPATCH = "dispatch"
    CANCEL = "cancel"


class ResultKind(StrEnum):
    """What a ``task-results`` record reports."""

    STARTED = "started"
    HEARTBEAT = "heartbeat"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class TaskDispatch:
    """One task attempt handed to a worker (or, with ``kind=cancel``, taken back)."""

    task_id: str
    attempt: int
    idempotency_key: str
    queue: str
    priority: int
    tenant: str
    run_id: str
    workflow_type: str
    step: str
    input: Any
    config: dict[str, Any]
    dispatched_at: int
    result_topic: str
    result_key: str
    result_partition: int
    schedule_to_start_ms: int | None = None
    start_to_close_ms: int | None = None
    heartbeat_ms: int | None = None
    max_attempts: int | None = None
    traceparent: str | None = None
    kind: DispatchKind = DispatchKind.DISPATCH

    @property
    def last_attempt(self) -> bool:
        """Is this the last attempt the retry policy allows?"""
        return self.max_attempts is not None and self.attempt >= self.max_attempts


@dataclass(frozen=True, slots=True)
class TaskError:
    """Why an attempt failed; ``retryable=False`` fails the step at once."""

    code: str
    message: str
    retryable: bool = True
    details: Any = None

    def to_json(self) -> dict[str, Any]:
        """The error as the ``FailTask`` command carries it."""
        out: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.details is not None:
            out["details"] = self.details
        return out


@dataclass(frozen=True, slots=True)
class TaskResult:
    """A worker's report on one attempt."""

    task_id: str
    attempt: int
    kind: ResultKind
    worker: str
    time: int
    output: Any = None
    error: TaskError | None = None
    progress: Any = None
    traceparent: str | None = None


# -- building results ------------------------------------------------------------


def started(d: TaskDispatch, worker: str, now_ms: int) -> TaskResult:
    """The attempt is taken: the task service starts its start-to-close clock."""
    return TaskResult(d.task_id, d.attempt, ResultKind.STARTED, worker, now_ms)


def heartbeat(d: TaskDispatch, worker: str, now_ms: int, progress: Any = None) -> TaskResult:
    """Still working: extends the heartbeat deadline."""
    return TaskResult(d.task_id, d.attempt, ResultKind.HEARTBEAT, worker, now_ms, progress=progress)


def completed(d: TaskDispatch, worker: str, now_ms: int, output: Any) -> TaskResult:
    """The attempt succeeded with ``output`` (any JSON value)."""
    return TaskResult(d.task_id, d.attempt, ResultKind.COMPLETED, worker, now_ms, output=output)


def failed(
    d: TaskDispatch,
    worker: str,
    now_ms: int,
    code: str,
    message: str,
    *,
    retryable: bool = True,
    details: Any = None,
) -> TaskResult:
    """The attempt failed; the step's retry policy decides what happens next."""
    err = TaskError(code, message, retryable, details)
    return TaskResult(d.task_id, d.attempt, ResultKind.FAILED, worker, now_ms, error=err)


def result_target(d: TaskDispatch) -> tuple[str, str, int]:
    """``(topic, key, partition)`` every result of ``d`` must be produced with."""
    return d.result_topic, d.result_key, d.result_partition


# -- records -----------------------------------------------------------------------


def dispatch_to_record(d: TaskDispatch) -> dict[str, Any]:
    return {
        "kind": d.kind.value,
        "task_id": d.task_id,
        "attempt": d.attempt,
        "idempotency_key": d.idempotency_key,
        "queue": d.queue,
        "priority": d.priority,
        "tenant": d.tenant,
        "run_id": d.run_id,
        "workflow_type": d.workflow_type,
        "step": d.step,
        "input": _json_text(d.input, f"task {d.task_id} input"),
        "config": _json_text(d.config or {}, f"task {d.task_id} config"),
        "dispatched_at": d.dispatched_at,
        "schedule_to_start_ms": d.schedule_to_start_ms,
        "start_to_close_ms": d.start_to_close_ms,
        "heartbeat_ms": d.heartbeat_ms,
        "max_attempts": d.max_attempts,
        "result_topic": d.result_topic,
        "result_key": d.result_key,
        "result_partition": d.result_partition,
        "traceparent": d.traceparent,
    }


def dispatch_from_record(r: dict[str, Any]) -> TaskDispatch:
    config = _json_value(r["config"], "config")
    if not isinstance(config, dict):
        raise ValueError(f"config is a JSON {type(config).__name__}, not an object")
    return TaskDispatch(
        task_id=r["task_id"],
        attempt=r["attempt"],
        idempotency_key=r["idempotency_key"],
        queue=r["queue"],
        priority=r["priority"],
        tenant=r["tenant"],
        run_id=r["run_id"],
        workflow_type=r["workflow_type"],
        step=r["step"],
        input=_json_value(r["input"], "input"),
        config=config,
        dispatched_at=_millis(r["dispatched_at"]),
        result_topic=r["result_topic"],
        result_key=r["result_key"],
        result_partition=r["result_partition"],
        schedule_to_start_ms=r.get("schedule_to_start_ms"),
        start_to_close_ms=r.get("start_to_close_ms"),
        heartbeat_ms=r.get("heartbeat_ms"),
        max_attempts=r.get("max_attempts"),
        traceparent=r.get("traceparent"),
        kind=DispatchKind(r.get("kind", "dispatch")),
    )


def result_to_record(t: TaskResult) -> dict[str, Any]:
    what = f"result of task {t.task_id}"
    error = None
    if t.error is not None:
        error = {
            "code": t.error.code,
            "message": t.error.message,
            "retryable": t.error.retryable,
            "details": None
            if t.error.details is None
            else _json_text(t.error.details, f"{what}: error details"),
        }
    return {
        "task_id": t.task_id,
        "attempt": t.attempt,
        "kind": t.kind.value,
        "worker": t.worker,
        "time": t.time,
        "output": _json_text(t.output, f"{what}: output")
        if t.kind is ResultKind.COMPLETED
        else None,
        "error": error,
        "progress": None if t.progress is None else _json_text(t.progress, f"{what}: progress"),
        "traceparent": t.traceparent,
    }


def result_from_record(r: dict[str, Any]) -> TaskResult:
    kind = ResultKind(r["kind"])
    raw_error = r.get("error")
    error = None
    if raw_error is not None:
        details = raw_error.get("details")
        error = TaskError(
            code=raw_error["code"],
            message=raw_error["message"],
            retryable=raw_error.get("retryable", True),
            details=None if details is None else _json_value(details, "error.details"),
        )
    if kind is ResultKind.FAILED and error is None:
        raise ValueError("a failed result carries no error")
    output = r.get("output")
    progress = r.get("progress")
    return TaskResult(
        task_id=r["task_id"],
        attempt=r["attempt"],
        kind=kind,
        worker=r["worker"],
        time=_millis(r["time"]),
        output=None if output is None else _json_value(output, "output"),
        error=error,
        progress=None if progress is None else _json_value(progress, "progress"),
        traceparent=r.get("traceparent"),
    )


# -- bytes -------------------------------------------------------------------------


def encode_dispatch(d: TaskDispatch) -> bytes:
    """``d`` as an Avro single-object ``TaskDispatch``."""
    codec = default_codec()
    schema = codec.schemas.current(TASK_DISPATCH)
    return codec.encode_record(schema, dispatch_to_record(d), f"dispatch of task {d.task_id}")


def decode_dispatch(data: bytes) -> TaskDispatch:
    """The dispatch in ``data``; raises ``HeadraceError`` (DECODE_FAILED, UNKNOWN_SCHEMA)."""
    record = default_codec().decode_record(data, TASK_DISPATCH)
    try:
        return dispatch_from_record(record)
    except (ValueError, TypeError, KeyError) as exc:
        raise _invalid(TASK_DISPATCH, exc) from exc


def encode_result(t: TaskResult) -> bytes:
    """``t`` as an Avro single-object ``TaskResult``."""
    codec = default_codec()
    schema = codec.schemas.current(TASK_RESULT)
    return codec.encode_record(schema, result_to_record(t), f"result of task {t.task_id}")


def decode_result(data: bytes) -> TaskResult:
    """The result in ``data``; raises ``HeadraceError`` (DECODE_FAILED, UNKNOWN_SCHEMA)."""
    record = default_codec().decode_record(data, TASK_RESULT)
    try:
        return result_from_record(record)
    except (ValueError, TypeError, KeyError) as exc:
        raise _invalid(TASK_RESULT, exc) from exc


def _json_text(value: Any, what: str) -> str:
    try:
        return canonical_json(value)
    except (TypeError, ValueError) as exc:
        raise HeadraceError(
            ErrorCode.ENCODE_FAILED,
            f"{what} is not plain JSON ({exc}) — use dicts, lists, str, int, finite floats, "
            "bool and None",
        ) from exc


def _json_value(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{what} is not JSON text: {exc}") from None


def _invalid(name: str, exc: Exception) -> HeadraceError:
    return HeadraceError(
        ErrorCode.DECODE_FAILED,
        f"cannot decode message: {name} fields are invalid: {exc} — the writer does not "
        "follow docs/tasks.md",
    )
