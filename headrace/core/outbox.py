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
  "correlation", "index", "time"}`` and ``{"op": "cancel_wait", "wait_id",
  "tenant", "run_id", "signal", "correlation", "index", "reason"[, "signal_id"]}``
  — written once keyed by the wait's correlation address (``index:
  "correlation"``) and, when the correlation key is not the run id, once more
  keyed by the run's address (``index: "run"``), so both correlation- and
  run-addressed signals find the wait. Users' signals (``{"op": "signal", ...}``)
  and broadcasts are built by :func:`signal_body` and :func:`broadcast_body`;
* ``notifications``: ``{"id", "kind", "tenant", "run_id", "workflow_type",
  "workflow_version", "step", "approval_id", "recipients": {"users", "roles"},
  "due", "due_business", "time", "details"}`` keyed by run key, built by
  :func:`notification_body` (docs/approvals.md).

Every ``signals`` message is written by :func:`signal_message`: keyed by its
*address* ``<tenant>/<correlation key or run id>`` (:func:`signal_key`), on
partition ``murmur2(key) % P`` — the Java client's default partitioner, set
explicitly because librdkafka's default hashes differently — so everything about
one address is on one partition of the signal service (docs/signals.md).
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
    Notify,
    NotifyParent,
    ScheduleTask,
    StartChild,
)
from headrace.core.envelope import Command, CommandType, canonical_json
from headrace.core.partitioner import positive_hash
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
                if e.traceparent is not None:
                    body["traceparent"] = e.traceparent
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
                body = {
                    "op": "await",
                    "wait_id": e.id,
                    **base,
                    "signal": e.signal,
                    "correlation": e.correlation,
                    "time": e.time,
                }
                out.extend(_indexed(body, routing))
            case CancelSignalWait():
                body = {
                    "op": "cancel_wait",
                    "wait_id": e.id,
                    **base,
                    "signal": e.signal,
                    "correlation": e.correlation,
                    "reason": e.reason,
                }
                if e.signal_id is not None:
                    body["signal_id"] = e.signal_id
                out.extend(_indexed(body, routing))
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
            case Notify():
                out.append(notification_message(e, routing))
            case _:
                # Approval inbox effects (RequestApproval, NotifyApprovers,
                # WithdrawApproval): the approvals query model is built from `events`,
                # and people hear of them through the `Notify` beside each.
                pass
    return out


def _run(e: Effect) -> tuple[str, str]:
    return e.tenant, e.run_id


# -- the notifications topic --------------------------------------------------------------


def notification_body(e: Notify) -> dict[str, Any]:
    """The JSON body of a ``notifications`` message (docs/approvals.md, "Notifications")."""
    return {
        "id": e.id,
        "kind": e.kind,
        "tenant": e.tenant,
        "run_id": e.run_id,
        "workflow_type": e.workflow_type,
        "workflow_version": e.workflow_version,
        "step": e.step,
        "approval_id": e.approval_id,
        "recipients": {"users": list(e.users), "roles": list(e.roles)},
        "due": e.due,
        "due_business": e.due_business,
        "time": e.time,
        "details": e.details,
    }


def notification_message(e: Notify, routing: Routing) -> Outgoing:
    """``e`` on ``notifications``: keyed by run key, at the run's partition, with a
    ``headrace-kind`` header so consumers can filter without parsing."""
    headers = JSON_HEADERS_CACHE.get(f"kind:{e.kind}")
    if headers is None:
        headers = JSON_HEADERS_CACHE[f"kind:{e.kind}"] = [
            ("content-type", b"application/json"),
            ("headrace-kind", e.kind.encode()),
        ]
    return Outgoing(
        routing.topics.notifications,
        canonical_json(notification_body(e)).encode(),
        f"{e.tenant}/{e.run_id}",
        routing.partition(e.tenant, e.run_id),
        headers,
    )


# -- the signals topic ------------------------------------------------------------------


def signal_address(tenant: str, name: str) -> str:
    """The address of correlation key (or run id) ``name`` of ``tenant``: ``<tenant>/<name>``.

    Correlation keys are scoped to a tenant, and a wait without a ``correlation``
    uses its run id, so a run's own address is its run key."""
    return f"{tenant}/{name}"


def signal_key(body: dict[str, Any]) -> str:
    """The record key of a ``signals`` message: the address it concerns."""
    op = body["op"]
    if op == "broadcast":
        return f"broadcast/{body['type']}"
    if op == "signal":
        run_id = body.get("run_id")
        return signal_address(body["tenant"], run_id if run_id is not None else body["correlation"])
    by_run = body.get("index") == "run"
    return signal_address(body["tenant"], body["run_id"] if by_run else body["correlation"])


def signal_partition(key: str, partitions: int) -> int:
    """``toPositive(murmur2(key)) % partitions``, as Kafka's Java producer picks it."""
    return positive_hash(key) % partitions


def signal_message(body: dict[str, Any], routing: Routing) -> Outgoing:
    """``body`` (with its ``op``) as a ``signals`` record: the one encoder of that topic."""
    key = signal_key(body)
    rest = {k: v for k, v in body.items() if k != "op"}
    return _json(
        routing.topics.signals, body["op"], rest, key, signal_partition(key, routing.partitions)
    )


def signal_body(
    *,
    signal_id: str,
    signal: str,
    tenant: str,
    data: Any,
    time: int,
    run_id: str | None = None,
    correlation: str | None = None,
    traceparent: str | None = None,
) -> dict[str, Any]:
    """A user's signal to one run (``run_id``) or to a correlation key (``correlation``)."""
    if (run_id is None) == (correlation is None):
        raise ValueError("a signal names exactly one of run_id and correlation")
    body: dict[str, Any] = {
        "op": "signal",
        "signal_id": signal_id,
        "signal": signal,
        "tenant": tenant,
        "data": data,
        "time": time,
    }
    if run_id is not None:
        body["run_id"] = run_id
    else:
        body["correlation"] = correlation
    if traceparent is not None:
        body["traceparent"] = traceparent
    return body


def broadcast_body(
    *,
    signal_id: str,
    signal: str,
    workflow_type: str,
    data: Any,
    time: int,
    tenant: str | None = None,
    filter_expr: str | None = None,
    traceparent: str | None = None,
) -> dict[str, Any]:
    """One signal for every running run of ``workflow_type`` (of ``tenant``, whose input
    passes the jq ``filter_expr``, when given)."""
    body: dict[str, Any] = {
        "op": "broadcast",
        "signal_id": signal_id,
        "signal": signal,
        "type": workflow_type,
        "data": data,
        "time": time,
    }
    if tenant is not None:
        body["tenant"] = tenant
    if filter_expr is not None:
        body["filter"] = filter_expr
    if traceparent is not None:
        body["traceparent"] = traceparent
    return body


def _indexed(body: dict[str, Any], routing: Routing) -> list[Outgoing]:
    """A wait's await or cancel, to its correlation address and, if that is not the
    run's own address, to the run's too (run-addressed signals look for it there)."""
    out = [signal_message({**body, "index": "correlation"}, routing)]
    if body["correlation"] != body["run_id"]:
        out.append(signal_message({**body, "index": "run"}, routing))
    return out


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
