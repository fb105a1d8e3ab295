"""A run's history read back from the ``events`` topic: collapse, verify, follow, render.

Every event of a run is on one partition of ``events`` (the tenant
partitioner, :attr:`Settings.routing`), keyed ``<tenant>/<run_id>``. Reading a
run means reading that partition and keeping the run's records. Under
at-least-once delivery an event may appear twice, but only as a byte-identical
redelivery: readers collapse those (and count them) before showing a timeline;
:func:`headrace.core.chain.verify` does the same while it checks the chain.

Used by ``headrace history`` and ``headrace start --wait``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from headrace.core.chain import ChainReport, verify
from headrace.core.codec import decode_event
from headrace.core.envelope import Event, EventType, canonical_json
from headrace.errors import ErrorCode, HeadraceError
from headrace.settings import Settings
from headrace.streams.partition_reader import end_offsets, read_partition

_TRANSIENT = frozenset(
    {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError._TRANSPORT}
)

TERMINAL = frozenset(
    {
        EventType.RunCompleted,
        EventType.RunFailed,
        EventType.RunCancelled,
        EventType.RunTerminated,
        EventType.RunContinuedAsNew,
    }
)


@dataclass(frozen=True, slots=True)
class Logged:
    """One record of a run's log: its bytes, and the event if they decode."""

    offset: int
    raw: bytes
    event: Event | None
    error: str = ""

    @property
    def terminal(self) -> bool:
        return self.event is not None and self.event.type in TERMINAL


def _logged(offset: int, raw: bytes) -> Logged:
    try:
        return Logged(offset, raw, decode_event(raw))
    except HeadraceError as exc:
        return Logged(offset, raw, None, exc.message)


@dataclass(slots=True)
class RunLog:
    """Everything the log holds about one run, in log order, redeliveries included."""

    tenant: str
    run_id: str
    topic: str
    partition: int
    records: list[Logged] = field(default_factory=list)

    @property
    def run_key(self) -> str:
        return f"{self.tenant}/{self.run_id}"

    def distinct(self) -> list[Logged]:
        """The records with byte-identical redeliveries collapsed (first one kept)."""
        seen: set[bytes] = set()
        out = []
        for r in self.records:
            if r.raw not in seen:
                seen.add(r.raw)
                out.append(r)
        return out

    @property
    def duplicates(self) -> int:
        return len(self.records) - len({r.raw for r in self.records})

    def verify(self) -> ChainReport:
        return verify([r.raw for r in self.records], run_key=self.run_key)


def run_partition(settings: Settings, tenant: str, run_id: str) -> int:
    return settings.routing.partition(tenant, run_id)


def read_run(settings: Settings, tenant: str, run_id: str, *, timeout: float = 30.0) -> RunLog:
    """The run's records as of now (raises ``RUN_NOT_FOUND`` when it has none)."""
    topic = settings.topics.events
    partition = run_partition(settings, tenant, run_id)
    log = RunLog(tenant, run_id, topic, partition)
    key = log.run_key.encode()
    deadline = time.monotonic() + timeout
    while True:
        try:
            for rec in read_partition(settings.bootstrap, topic, partition, timeout=timeout):
                if rec.key == key and rec.value is not None:
                    log.records.append(_logged(rec.offset, rec.value))
            break
        except KafkaException as exc:
            # A partition changing (or just given) a leader: ask again, briefly.
            if exc.args[0].code() not in _TRANSIENT or time.monotonic() > deadline:
                raise HeadraceError(
                    ErrorCode.KAFKA_UNAVAILABLE, f"cannot read {topic}[{partition}]: {exc}"
                ) from exc
            log.records.clear()
            time.sleep(0.2)
    if not log.records:
        raise HeadraceError(
            ErrorCode.RUN_NOT_FOUND,
            f"no events for run {log.run_key} in {topic}[{partition}] — check the run id and "
            "--tenant (default 'default'); a run just started may not have its first event yet",
        )
    return log


def end_of_run_partition(settings: Settings, tenant: str, run_id: str) -> int:
    """The current end offset of the run's ``events`` partition (where new events will go)."""
    topic, partition = settings.topics.events, run_partition(settings, tenant, run_id)
    consumer = _consumer(settings)
    deadline = time.monotonic() + 30.0
    try:
        while True:
            try:
                return end_offsets(consumer, topic, partition, 30.0)[1]
            except KafkaException as exc:
                if exc.args[0].code() not in _TRANSIENT or time.monotonic() > deadline:
                    raise HeadraceError(
                        ErrorCode.KAFKA_UNAVAILABLE, f"cannot read {topic}[{partition}]: {exc}"
                    ) from exc
                time.sleep(0.2)
    finally:
        consumer.close()


def follow_run(
    settings: Settings,
    tenant: str,
    run_id: str,
    *,
    start: int = 0,
    deadline: float | None = None,
    until_terminal: bool = True,
    stop: Callable[[], bool] | None = None,
) -> Iterator[Logged]:
    """The run's records from offset ``start`` on, as they are appended, duplicates collapsed.

    Ends after a terminal event (with ``until_terminal``), at ``deadline``
    (a ``time.monotonic()`` value) or when ``stop()`` says so.
    """
    topic = settings.topics.events
    partition = run_partition(settings, tenant, run_id)
    key = f"{tenant}/{run_id}".encode()
    consumer = _consumer(settings)
    seen: set[bytes] = set()
    try:
        consumer.assign(
            [TopicPartition(topic, partition, start if start > 0 else OFFSET_BEGINNING)]
        )
        while True:
            if stop is not None and stop():
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                    continue
                raise HeadraceError(ErrorCode.KAFKA_UNAVAILABLE, f"reading {topic}: {err}")
            value = msg.value()
            if msg.key() != key or value is None or value in seen:
                continue
            seen.add(value)
            logged = _logged(msg.offset() or 0, value)
            yield logged
            if until_terminal and logged.terminal:
                return
    finally:
        consumer.close()


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": "headrace-history",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 50,
        }
    )


# ---------------------------------------------------------------------------
# how a run ended


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended, as ``headrace start --wait`` reports it."""

    status: str  # completed | failed | cancelled | terminated | continued
    exit_code: int
    detail: Any


def outcome_of(event: Event) -> Outcome:
    p = event.payload
    match event.type:
        case EventType.RunCompleted:
            return Outcome("completed", 0, p.get("output"))
        case EventType.RunFailed:
            return Outcome("failed", 1, p.get("error"))
        case EventType.RunCancelled:
            return Outcome("cancelled", 1, p.get("reason"))
        case EventType.RunTerminated:
            return Outcome("terminated", 1, p.get("reason"))
        case EventType.RunContinuedAsNew:
            return Outcome("continued", 0, p)
    raise ValueError(f"{event.type} does not end a run")


# ---------------------------------------------------------------------------
# rendering

_SUMMARY_KEYS = (
    "step",
    "queue",
    "attempt",
    "task_id",
    "timer_id",
    "due",
    "signal",
    "correlation",
    "approval_id",
    "decision",
    "user",
    "child_run_id",
    "workflow",
    "version",
    "reason",
    "error",
    "output",
    "input",
    "result",
)


def iso_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _short(value: Any, limit: int = 48) -> str:
    if isinstance(value, dict) and "code" in value and "message" in value:
        text = f"{value['code']}: {value['message']}"
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = canonical_json(value)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summary(event: Event, limit: int = 100) -> str:
    """A one-line digest of an event's payload: its telling fields first."""
    p = event.payload
    parts = [f"{k}={_short(p[k])}" for k in _SUMMARY_KEYS if p.get(k) is not None]
    if not parts and p:
        parts = [_short(p, limit)]
    text = " ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def as_json(r: Logged) -> dict[str, Any]:
    """One record as ``headrace history --format json`` prints it."""
    if r.event is None:
        return {"offset": r.offset, "undecodable": r.error}
    e = r.event
    return {
        "seq": e.seq,
        "time": iso_time(e.time),
        "type": e.type.value,
        "payload": e.payload,
        "event_id": e.event_id,
        "causation_id": e.causation_id,
        "correlation_id": e.correlation_id,
        "idempotency_key": e.idempotency_key,
        "workflow": f"{e.workflow_type}@{e.workflow_version}",
        "offset": r.offset,
        "hash": e.hash.hex(),
    }


def report_json(report: ChainReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "events": report.count,
        "duplicates": report.duplicates,
        "last_seq": report.last_seq,
        "head": report.head.hex(),
        "reason": str(report.reason) if report.reason else None,
        "bad_seq": report.bad_seq,
        "detail": report.detail or None,
    }


def row(r: Logged) -> tuple[str, str, str, str]:
    """``(seq, time, type, summary)`` of a record for a timeline."""
    if r.event is None:
        return ("?", "-", "undecodable", f"offset {r.offset}: {r.error}")
    e = r.event
    return (str(e.seq), iso_time(e.time), e.type.value, summary(e))
