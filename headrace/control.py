"""Control operations on runs: suspend, resume, cancel, terminate — one code path for all callers.

The CLI (``headrace suspend RUN``), its bulk forms and the query API's
``POST /runs/{tenant}/{run_id}/{op}`` all build their commands with
:func:`control_command` and write them with :func:`send`. A command carries
``{actor, reason}``; the decider records both on the event it causes
(``RunSuspended``, ``RunResumed``, ``RunCancelRequested``, ``RunTerminated``).
Command ids are unique per invocation (``ctl:<op>:<invocation>:<tenant>/<run>``):
the orchestrator applies each once, and a second invocation is a new command.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any

from confluent_kafka import Producer

from headrace.core.envelope import Command, CommandType
from headrace.core.outbox import command_message
from headrace.core.views import TERMINAL
from headrace.kafka import DeliveryReport, flush, make_producer
from headrace.settings import Settings


class Op(StrEnum):
    """A control operation."""

    SUSPEND = "suspend"
    RESUME = "resume"
    CANCEL = "cancel"
    TERMINATE = "terminate"


COMMAND: dict[Op, CommandType] = {
    Op.SUSPEND: CommandType.SuspendRun,
    Op.RESUME: CommandType.ResumeRun,
    Op.CANCEL: CommandType.CancelRun,
    Op.TERMINATE: CommandType.TerminateRun,
}

# Which runs a bulk form targets unless --status says otherwise.
DEFAULT_STATUSES: dict[Op, tuple[str, ...]] = {
    Op.SUSPEND: ("running",),
    Op.RESUME: ("suspended",),
    Op.CANCEL: ("running", "suspended"),
    Op.TERMINATE: ("running", "suspended", "compensating"),
}

# What the run's status becomes (for progress lines and --wait).
OUTCOME: dict[Op, str] = {
    Op.SUSPEND: "suspended",
    Op.RESUME: "running",
    Op.CANCEL: "cancelled",
    Op.TERMINATE: "terminated",
}


def invocation_id() -> str:
    """A fresh id for one invocation of an operation (shared by its commands)."""
    return uuid.uuid4().hex[:16]


def control_command(
    op: Op,
    tenant: str,
    run_id: str,
    *,
    actor: str,
    reason: str,
    invocation: str,
    now_ms: int | None = None,
) -> Command:
    """The command that performs ``op`` on run ``tenant/run_id``."""
    return Command(
        command_id=f"ctl:{op.value}:{invocation}:{tenant}/{run_id}",
        tenant=tenant,
        run_id=run_id,
        type=COMMAND[op],
        time=int(time.time() * 1000) if now_ms is None else now_ms,
        payload={"actor": actor, "reason": reason},
    )


def send(
    settings: Settings,
    commands: Iterable[Command],
    *,
    producer: Producer | None = None,
    on_sent: Callable[[Command], None] | None = None,
) -> int:
    """Produce ``commands`` to their runs' partitions of ``commands``; wait for every ack.

    Raises ``HeadraceError`` (``KAFKA_PRODUCE_FAILED``/``KAFKA_TIMEOUT``) if any
    is not acknowledged; re-sending is safe only with the same command ids.
    """
    own = producer is None
    p = producer or make_producer(settings, "headrace-control", linger_ms=2)
    report = DeliveryReport()
    n = 0
    for command in commands:
        m = command_message(command, settings.routing)
        assert m.partition is not None  # a command goes to its run's partition
        while True:
            try:
                p.produce(m.topic, m.value, m.key, partition=m.partition, on_delivery=report)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        n += 1
        if on_sent is not None:
            on_sent(command)
    flush(p, report=report)
    if own:
        p.flush(1)
    return n


def reached(op: Op, view: dict[str, Any]) -> bool:
    """Whether the run view shows ``op`` done (or the run ended, so it never will be)."""
    status = view["status"]
    if status in TERMINAL:
        return True
    if op is Op.SUSPEND:
        return view.get("suspension") is not None
    if op is Op.RESUME:
        return view.get("suspension") is None and status != "suspended"
    return False
