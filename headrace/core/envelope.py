"""The two messages the engine speaks: :class:`Command` in, :class:`Event` out.

Both mirror the Avro records in ``schemas/avro/`` (``command.avsc``,
``workflow_event.avsc``); a test keeps the enums here equal to the schema's
symbols. Payloads are plain JSON values in memory and canonical JSON on the
wire (:func:`canonical_json`), so an event's bytes, and hence its hash, depend
only on its content.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

ZERO_HASH = bytes(32)


class EventType(StrEnum):
    """What happened to a run (the CWE ``type`` enum)."""

    RunStarted = "RunStarted"
    RunCompleted = "RunCompleted"
    RunFailed = "RunFailed"
    RunCancelRequested = "RunCancelRequested"
    RunCancelled = "RunCancelled"
    RunTerminated = "RunTerminated"
    RunSuspended = "RunSuspended"
    RunResumed = "RunResumed"
    RunTimedOut = "RunTimedOut"
    RunContinuedAsNew = "RunContinuedAsNew"
    RunDataUpdated = "RunDataUpdated"
    StepStarted = "StepStarted"
    StepCompleted = "StepCompleted"
    StepFailed = "StepFailed"
    StepSkipped = "StepSkipped"
    ErrorCaught = "ErrorCaught"
    ChoiceEvaluated = "ChoiceEvaluated"
    BranchStarted = "BranchStarted"
    BranchCompleted = "BranchCompleted"
    BranchFailed = "BranchFailed"
    BranchCancelled = "BranchCancelled"
    JoinCompleted = "JoinCompleted"
    ForeachStarted = "ForeachStarted"
    IterationStarted = "IterationStarted"
    IterationCompleted = "IterationCompleted"
    IterationFailed = "IterationFailed"
    ForeachCompleted = "ForeachCompleted"
    TaskScheduled = "TaskScheduled"
    TaskStarted = "TaskStarted"
    TaskCompleted = "TaskCompleted"
    TaskFailed = "TaskFailed"
    TaskRetryScheduled = "TaskRetryScheduled"
    TaskTimedOut = "TaskTimedOut"
    TaskDeadLettered = "TaskDeadLettered"
    TaskRedriven = "TaskRedriven"
    TaskCancelled = "TaskCancelled"
    TimerArmed = "TimerArmed"
    TimerFired = "TimerFired"
    TimerCancelled = "TimerCancelled"
    TimerReset = "TimerReset"
    SignalAwaited = "SignalAwaited"
    SignalReceived = "SignalReceived"
    SignalTimedOut = "SignalTimedOut"
    ApprovalRequested = "ApprovalRequested"
    ApprovalGranted = "ApprovalGranted"
    ApprovalRejected = "ApprovalRejected"
    ApprovalDecisionRefused = "ApprovalDecisionRefused"
    ApprovalDelegated = "ApprovalDelegated"
    ApprovalReminderSent = "ApprovalReminderSent"
    ApprovalExpired = "ApprovalExpired"
    ApprovalEscalated = "ApprovalEscalated"
    ApprovalCompleted = "ApprovalCompleted"
    ChildStartRequested = "ChildStartRequested"
    ChildStarted = "ChildStarted"
    ChildCompleted = "ChildCompleted"
    ChildFailed = "ChildFailed"
    ChildSpawned = "ChildSpawned"
    ChildCancelRequested = "ChildCancelRequested"
    CompensationStarted = "CompensationStarted"
    CompensationStepStarted = "CompensationStepStarted"
    CompensationStepCompleted = "CompensationStepCompleted"
    CompensationStepFailed = "CompensationStepFailed"
    CompensationCompleted = "CompensationCompleted"
    CompensationFailed = "CompensationFailed"
    SlaAtRisk = "SlaAtRisk"
    SlaBreached = "SlaBreached"
    RunMigrated = "RunMigrated"
    CommandRejected = "CommandRejected"
    AuditNoted = "AuditNoted"
    MarkerRecorded = "MarkerRecorded"
    IterationCancelled = "IterationCancelled"
    SignalWaitCancelled = "SignalWaitCancelled"
    ApprovalCancelled = "ApprovalCancelled"
    Unknown = "Unknown"


class CommandType(StrEnum):
    """What a command asks a run to do."""

    StartRun = "StartRun"
    CompleteTask = "CompleteTask"
    FailTask = "FailTask"
    TaskStarted = "TaskStarted"
    TimeoutTask = "TimeoutTask"
    FireTimer = "FireTimer"
    DeliverSignal = "DeliverSignal"
    DecideApproval = "DecideApproval"
    DelegateApproval = "DelegateApproval"
    ChildFinished = "ChildFinished"
    ChildStarted = "ChildStarted"
    SuspendRun = "SuspendRun"
    ResumeRun = "ResumeRun"
    CancelRun = "CancelRun"
    TerminateRun = "TerminateRun"
    RedriveTask = "RedriveTask"
    UpdateRunData = "UpdateRunData"
    MigrateRun = "MigrateRun"
    RecordMarker = "RecordMarker"
    Unknown = "Unknown"


def canonical_json(value: Any) -> str:
    """The one JSON spelling of ``value``: sorted keys, no whitespace, UTF-8, no NaN.

    Raises ``TypeError`` for what JSON cannot hold and ``ValueError`` for NaN,
    infinities and values nested in themselves.
    """
    try:
        return "".join(_canonical_chunks(value, 0))
    except RecursionError:
        raise ValueError("the value contains itself (or nests too deep for JSON)") from None


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
# Every event is encoded through here while it is sealed. JSONEncoder.encode
# builds a new C encoder per call (a third of the cost on event payloads), so
# keep one. It runs without circular-reference markers: a shared markers dict
# keeps stale entries after a failed call; payloads are JSON trees, and a cycle
# still fails, as RecursionError.
_canonical_chunks = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None,
        _CANONICAL.default,
        json.encoder.encode_basestring,
        None,
        ":",
        ",",
        True,
        False,
        False,
    )
    if json.encoder.c_make_encoder is not None  # type: ignore[attr-defined]
    else lambda value, _level: (_CANONICAL.encode(value),)
)


def event_id_for(tenant: str, run_id: str, seq: int) -> str:
    """Deterministic event id: a UUID (v5-style, SHA-1 over ``tenant/run_id#seq``)."""
    return str(uuid.uuid5(_NS, f"{tenant}/{run_id}#{seq}"))


def effect_id(run_id: str, seq: int, suffix: str = "") -> str:
    """Id of an effect (task, timer, signal wait, child) derived from the event that caused it.

    Stable across replays, so the services downstream can dedupe on it.
    """
    return f"{run_id}:{seq}{':' + suffix if suffix else ''}"


_NS = uuid.UUID("6f1d3c1e-6b2f-5c9a-9f5e-6865616472ac")


@dataclass(frozen=True, slots=True)
class Command:
    """A request addressed to one run."""

    command_id: str
    tenant: str
    run_id: str
    type: CommandType
    time: int  # epoch milliseconds, issuer's clock
    payload: dict[str, Any] = field(default_factory=dict)
    causation_id: str | None = None
    correlation_id: str | None = None
    traceparent: str | None = None

    @property
    def run_key(self) -> str:
        return f"{self.tenant}/{self.run_id}"


@dataclass(slots=True)
class Event:
    """One entry of a run's history: a Canonical Workflow Event.

    ``prev_hash`` and ``hash`` are filled in by :mod:`headrace.core.chain`
    when the event is sealed onto its run's chain. Treat an event as immutable;
    it is not a frozen dataclass only because the decider builds several per
    decision and a frozen constructor costs a third of that (bench/decider.py).
    """

    tenant: str
    run_id: str
    workflow_type: str
    workflow_version: int
    seq: int
    type: EventType
    time: int  # epoch milliseconds, the run's logical time
    causation_id: str
    payload: dict[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None
    idempotency_key: str | None = None
    traceparent: str | None = None
    event_id: str = ""
    prev_hash: bytes = ZERO_HASH
    hash: bytes = ZERO_HASH

    def __post_init__(self) -> None:
        if not self.event_id:
            self.event_id = event_id_for(self.tenant, self.run_id, self.seq)

    @property
    def run_key(self) -> str:
        return f"{self.tenant}/{self.run_id}"

    def with_chain(self, prev_hash: bytes, hash_: bytes) -> Event:
        """This event sealed onto its chain.

        Sealing is on the hot path: the constructor is 10x faster than
        ``copy.copy`` or ``replace`` here (test_envelope checks no field is lost).
        """
        return Event(
            self.tenant,
            self.run_id,
            self.workflow_type,
            self.workflow_version,
            self.seq,
            self.type,
            self.time,
            self.causation_id,
            self.payload,
            self.correlation_id,
            self.idempotency_key,
            self.traceparent,
            self.event_id,
            prev_hash,
            hash_,
        )


def digest(prev_hash: bytes, body: bytes) -> bytes:
    """``sha256(prev_hash || body)``: the chain step (see docs/events.md)."""
    return hashlib.sha256(prev_hash + body).digest()
