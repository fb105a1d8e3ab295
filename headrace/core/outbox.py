"""Effects become Kafka messages: which topic, key, partition and bytes.

The decider says *what* the world must do (:mod:`headrace.core.decider.effects`);
this module says how it is written down, in one place, so every producer of
an effect — the orchestrator on the hot path and during replay — writes the
same bytes. Run-keyed messages go to the run's partition (tenant partitioner).

Internal topics (``timers``, ``task-requests``, ``signals``) carry canonical
JSON with a ``headrace-op`` header, readable in Kafka UI; ``commands`` carry
Avro ``Command`` records. The JSON shapes are documented in docs/topics.md:

* ``timers``: ``{"op": "arm", "timer_id", "tenant", "run_id", "purpose", "due",
  "business", "command": <Command as JSON>}`` and ``{"op": "cancel", "timer_id",
  "tenant", "run_id"}`` — the timer service produces ``command`` to
  ``commands`` when the timer is due;
* ``task-requests``: ``{"op": "schedule", "task_id", "tenant", "run_id",
  "workflow_type", "step", "attempt", "queue", "input", "priority",
  "timeouts", "retry", "idempotency_key", "config"}`` and ``{"op": "cancel",
  "task_id", "tenant", "run_id"}``;
* ``signals``: ``{"op": "await", "wait_id", "tenant", "run_id", "signal",
  "correlation"}`` keyed by correlation key, and ``{"op": "cancel_wait",
  "wait_id", "tenant", "run_id"}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from headrace.core.codec import encode_command
from headrace.core.decider.effects import (
    ArmTimer,
    AwaitSignal,
    CancelChild,
    CancelSignalWait,
    CancelTask,
    CancelTimer,
    Effect,
    NotifyParent,
    ScheduleTask,
    StartChild,
)
from headrace.core.envelope import Command, CommandType, canonical_json
from headrace.topology import Routing

JSON_HEADERS_CACHE: dict[str, list[tuple[str, bytes]]] = {}


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to produce."""

    topic: str
    value: bytes | None
    key: bytes | str | None = None
    partition: int | None = None
    headers: list[tuple[str, bytes]] | None = None


def _headers(op: str) -> list[tuple[str, bytes]]:
    h = JSON_HEADERS_CACHE.get(op)
    if h is None:
        h = JSON_HEADERS_CACHE[op] = [
            ("content-type", b"application/json"),
            ("headrace-op", op.encode()),
        ]
    return h


def command_to_json(c: Command) -> dict[str, Any]:
    """A command as plain JSON (for messages that carry a command to send later)."""
    return {
        "command_id": c.command_id,
        "tenant": c.tenant,
        "run_id": c.run_id,
        "type": c.type.value,
        "time": c.time,
        "payload": c.payload,
        "causation_id": c.causation_id,
        "correlation_id": c.correlation_id,
        "traceparent": c.traceparent,
    }


def command_from_json(d: dict[str, Any]) -> Command:
    """Inverse of :func:`command_to_json`; ``KeyError``/``ValueError`` on a malformed one."""
    return Command(
        command_id=str(d["command_id"]),
        tenant=str(d["tenant"]),
        run_id=str(d["run_id"]),
        type=CommandType(d["type"]),
        time=int(d["time"]),
        payload=dict(d.get("payload") or {}),
        causation_id=d.get("causation_id"),
        correlation_id=d.get("correlation_id"),
        traceparent=d.get("traceparent"),
    )


def command_message(c: Command, routing: Routing) -> Outgoing:
    """``c`` on the ``commands`` topic, at its run's partition."""
    return Outgoing(
        routing.topics.commands,
        encode_command(c),
        c.run_key,
        routing.partition(c.tenant, c.run_id),
    )


def _json(topic: str, op: str, body: dict[str, Any], key: str, partition: int | None) -> Outgoing:
    return Outgoing(
        topic, canonical_json({"op": op, **body}).encode(), key, partition, _headers(op)
    )


def messages_for(effects: Iterable[Effect], routing: Routing) -> list[Outgoing]:
    """The messages that carry out ``effects``, in order."""
    out: list[Outgoing] = []
    t = routing.topics
    for e in effects:
        base = {"tenant": e.tenant, "run_id": e.run_id}
        key = f"{e.tenant}/{e.run_id}"
        match e:
            case ScheduleTask():
                body = {
                    "task_id": e.id,
                    **base,
                    "workflow_type": e.workflow_type,
                    "step": e.step,
                    "attempt": e.attempt,
                    "queue": e.queue,
                    "input": e.input,
                    "priority": e.priority,
                    "timeouts": e.timeouts,
                    "retry": e.retry,
                    "idempotency_key": e.idempotency_key,
                    "config": e.config,
                }
                out.append(
                    _json(t.task_requests, "schedule", body, key, routing.partition(*_run(e)))
                )
            case CancelTask():
                body = {"task_id": e.id, **base}
                out.append(_json(t.task_requests, "cancel", body, key, routing.partition(*_run(e))))
            case ArmTimer():
                body = {
                    "timer_id": e.id,
                    **base,
                    "purpose": e.purpose,
                    "due": e.due,
                    "business": e.business,
                    "command": command_to_json(e.fire),
                }
                out.append(_json(t.timers, "arm", body, key, routing.partition(*_run(e))))
            case CancelTimer():
                body = {"timer_id": e.id, **base}
                out.append(_json(t.timers, "cancel", body, key, routing.partition(*_run(e))))
            case AwaitSignal():
                body = {"wait_id": e.id, **base, "signal": e.signal, "correlation": e.correlation}
                out.append(_json(t.signals, "await", body, e.correlation, None))
            case CancelSignalWait():
                body = {"wait_id": e.id, **base}
                out.append(_json(t.signals, "cancel_wait", body, key, None))
            case StartChild():
                start = Command(
                    command_id=f"{e.id}/start",
                    tenant=e.tenant,
                    run_id=e.id,
                    type=CommandType.StartRun,
                    time=e.time,
                    payload={
                        "workflow": e.workflow,
                        "version": e.version,
                        "input": e.input,
                        "parent": e.parent,
                    },
                    correlation_id=e.correlation_id,
                    traceparent=e.traceparent,
                )
                out.append(command_message(start, routing))
            case CancelChild():
                cancel = Command(
                    command_id=f"{e.id}/cancel-by-parent",
                    tenant=e.tenant,
                    run_id=e.id,
                    type=CommandType.CancelRun,
                    time=0,
                    payload={"reason": "parent cancelled", "actor": f"run:{e.run_id}"},
                )
                out.append(command_message(cancel, routing))
            case NotifyParent():
                out.append(command_message(e.command, routing))
            case _:
                # Approval inbox effects: the approvals query model is built from
                # `events` (ApprovalRequested ...), so nothing is produced here.
                pass
    return out


def _run(e: Effect) -> tuple[str, str]:
    return e.tenant, e.run_id


def batch_timer_ops(messages: list[Outgoing], routing: Routing) -> list[Outgoing]:
    """Fold the ``timers`` messages of one partition into one ``batch`` message each.

    Order is kept within a partition (an arm stays before its cancel). faust
    hands the timer service one Kafka message at a time at a fixed cost, so a
    batch of decisions arming many timers becomes a few messages instead of
    many (docs/timers.md, "batch").
    """
    topic = routing.topics.timers
    groups: dict[int | None, list[Outgoing]] = {}
    rest: list[Outgoing] = []
    for m in messages:
        if m.topic == topic:
            groups.setdefault(m.partition, []).append(m)
        else:
            rest.append(m)
    for partition, group in groups.items():
        if len(group) == 1:
            rest.append(group[0])
            continue
        ops = ",".join((m.value or b"").decode() for m in group)
        value = f'{{"op":"batch","ops":[{ops}]}}'.encode()
        rest.append(Outgoing(topic, value, group[0].key, partition, _headers("batch")))
    return rest
