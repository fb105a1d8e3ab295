"""The task DLQs, ``tasks.<queue>.dlq``: the entries the task service writes, and reading them.

A queue's DLQ is a log of JSON records keyed by the entry id — the task id of
the dead attempt — with the headers ``content-type: application/json`` and
``headrace-op: <status>``:

* ``dead``: the task and its whole attempt history, when its last attempt
  failed (``reason``: ``exhausted`` | ``non_retryable``; ``parked``: whether
  the run waits for a redrive — ``retry.on_exhausted: park``);
* ``redriven``: the run redrove it (the task service saw attempt 1 of the
  fresh budget);
* ``closed``: the run stopped waiting for it (cancelled, or the step was
  abandoned) without a redrive.

:func:`read_entries` folds the DLQs into their entries, each with its latest
status; :func:`redrive_command` and :func:`redrive` continue a parked run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from headrace.core.envelope import Command, CommandType, canonical_json
from headrace.core.outbox import Outgoing, command_message
from headrace.errors import ErrorCode, HeadraceError
from headrace.kafka import flush, make_admin, make_producer
from headrace.services.tasks.records import TaskRecord
from headrace.settings import Settings
from headrace.streams.partition_reader import read_partition
from headrace.topology import Topics

DEAD = "dead"
REDRIVEN = "redriven"
CLOSED = "closed"


def _headers(status: str) -> list[tuple[str, bytes]]:
    return [("content-type", b"application/json"), ("headrace-op", status.encode())]


def entry(
    topics: Topics,
    rec: TaskRecord,
    attempts: list[dict[str, Any]],
    reason: str,
    parked: bool,
    now: int,
) -> Outgoing:
    """The ``dead`` record of ``rec``, its last attempt, with the step visit's history."""
    body = {
        "status": DEAD,
        "id": rec.task_id,
        "queue": rec.queue,
        "tenant": rec.tenant,
        "run_id": rec.run_id,
        "workflow_type": rec.workflow_type,
        "step": rec.step,
        "idempotency_key": rec.idempotency_key,
        "priority": rec.priority,
        "reason": reason,
        "parked": parked,
        "error": rec.error
        if rec.error is not None
        else {"code": "timeout", "message": f"attempt {rec.attempt} timed out ({rec.timeout})"},
        "input": rec.input,
        "config": rec.config,
        "timeouts": rec.timeouts,
        "retry": rec.retry,
        "attempts": attempts,
        "time": now,
    }
    return Outgoing(
        topics.tasks_dlq(rec.queue),
        canonical_json(body).encode(),
        rec.task_id,
        None,
        _headers(DEAD),
    )


def status(topics: Topics, queue: str, entry_id: str, status: str, now: int) -> Outgoing:
    """A later status of entry ``entry_id`` (``redriven`` or ``closed``)."""
    body = {"status": status, "id": entry_id, "queue": queue, "time": now}
    return Outgoing(
        topics.tasks_dlq(queue), canonical_json(body).encode(), entry_id, None, _headers(status)
    )


@dataclass(slots=True)
class Entry:
    """A DLQ entry as operators see it: the ``dead`` record and its latest status."""

    id: str
    record: dict[str, Any]
    status: str = DEAD
    updated: int = 0
    statuses: list[dict[str, Any]] = field(default_factory=list)

    @property
    def queue(self) -> str:
        return str(self.record.get("queue", ""))

    @property
    def parked(self) -> bool:
        return bool(self.record.get("parked"))

    @property
    def redrivable(self) -> bool:
        """Can ``headrace dlq redrive`` continue its run?"""
        return self.parked and self.status == DEAD

    def to_json(self) -> dict[str, Any]:
        return {**self.record, "status": self.status, "updated": self.updated}


def fold(values: Iterable[bytes | None]) -> dict[str, Entry]:
    """Entries by id, in the order their ``dead`` records appear (unreadable records skipped)."""
    entries: dict[str, Entry] = {}
    for raw in values:
        if raw is None:
            continue
        try:
            body = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            continue
        entry_id = body["id"]
        if body.get("status") == DEAD:
            known = entries.get(entry_id)
            if known is None:
                entries[entry_id] = Entry(entry_id, body, DEAD, int(body.get("time") or 0))
            continue  # a repeated dead record (a batch redone after a crash)
        known = entries.get(entry_id)
        if known is not None:
            known.status = str(body.get("status"))
            known.updated = int(body.get("time") or 0)
            known.statuses.append(body)
    return entries


# -- operations (``headrace dlq``) ------------------------------------------------------


def dlq_topics(settings: Settings, queue: str | None = None) -> dict[str, int]:
    """The task DLQ topics that exist (of one queue, or of all), with their partition counts."""
    meta = make_admin(settings).list_topics(timeout=10.0)
    head = f"{settings.topic_prefix}tasks."
    found = {
        name: len(t.partitions)
        for name, t in sorted(meta.topics.items())
        if name.startswith(head) and name.endswith(".dlq")
    }
    if queue is None:
        return found
    wanted = settings.topics.tasks_dlq(queue)
    return {wanted: found[wanted]} if wanted in found else {}


def read_entries(settings: Settings, queue: str | None = None) -> dict[str, Entry]:
    """Every entry of the task DLQs (of ``queue``, or of every queue), by id, oldest first.

    The task service makes a DLQ with one partition, but one made by hand (or
    grown since) may have more: every partition is read. An entry's records
    share its key, hence a partition, so each partition folds on its own.
    """
    entries: dict[str, Entry] = {}
    for topic, partitions in dlq_topics(settings, queue).items():
        for partition in range(partitions):
            values = (r.value for r in read_partition(settings.bootstrap, topic, partition))
            entries.update(fold(values))
    ordered = sorted(entries.values(), key=lambda e: int(e.record.get("time") or 0))
    return {e.id: e for e in ordered}


def find(settings: Settings, entry_id: str, queue: str | None = None) -> Entry:
    """The entry ``entry_id``; ``HeadraceError`` (DLQ_ENTRY_NOT_FOUND) if no DLQ holds it."""
    entry = read_entries(settings, queue).get(entry_id)
    if entry is None:
        where = f"tasks.{queue}.dlq" if queue else "any task DLQ"
        raise HeadraceError(
            ErrorCode.DLQ_ENTRY_NOT_FOUND,
            f"no entry {entry_id!r} in {where} — `headrace dlq list` shows the entry ids "
            "(the task id of each dead attempt)",
        )
    return entry


def redrive_command(entry: Entry, now: int, actor: str | None, reason: str | None) -> Command:
    """The ``RedriveTask`` command that continues the parked run of ``entry``."""
    if not entry.redrivable:
        why = (
            f"it is {entry.status}"
            if entry.status != DEAD
            else "its step was not parked (retry.on_exhausted is fail, or the error was not "
            "retryable): the run's catch or compensation has handled the failure already"
        )
        raise HeadraceError(
            ErrorCode.COMMAND_REJECTED,
            f"DLQ entry {entry.id} ({entry.record.get('tenant')}/{entry.record.get('run_id')}, "
            f"step {entry.record.get('step')!r}) cannot be redriven: {why}",
        )
    record = entry.record
    return Command(
        command_id=f"redrive/{entry.id}",
        tenant=str(record["tenant"]),
        run_id=str(record["run_id"]),
        type=CommandType.RedriveTask,
        time=now,
        payload={"task_id": entry.id, "actor": actor, "reason": reason},
    )


def redrive(settings: Settings, commands: list[Command]) -> None:
    """Send ``RedriveTask`` commands to their runs (acknowledged before this returns)."""
    producer = make_producer(settings, "headrace-dlq")
    for c in commands:
        m = command_message(c, settings.routing)
        assert m.partition is not None
        producer.produce(m.topic, m.value, m.key, partition=m.partition)
    flush(producer)
