"""Every Kafka topic headrace uses, in one place: name, key, partitioning, writers, readers.

This is DESIGN.md's topic table in code. Services never spell a topic name
themselves; they ask :func:`topic` (or :class:`Topics`) for it, so the prefix,
the partition count and the cleanup policy are decided here once.

Why the topics are split the way they are:

* ``commands`` is the orchestrator's only input and is never written inside a
  Kafka transaction: a ``read_committed`` consumer waits for the producer's
  commit marker, which costs tens of milliseconds per workflow step. Delivery is
  at-least-once and the orchestrator dedupes by command id instead.
* ``events`` is the source of truth. The orchestrator's RocksDB table is only a
  snapshot of it; after a crash the snapshot is brought up to date by folding
  ``events`` (see DESIGN.md, "the log is the truth"). It is therefore kept
  forever (``retention.ms=-1``) unless an operator decides otherwise.
* ``commands``, ``events``, ``timers``, ``task-requests`` and ``task-results``
  are keyed by run key and co-partitioned (equal partition counts, the tenant
  partitioner picks the partition), so one worker owns all of a run's traffic on
  one partition number. ``signals`` has the same partition count but is keyed by
  *address* (``<tenant>/<correlation key or run id>``, murmur2 of the key), so
  that all runs waiting on one correlation key meet their signals on one
  partition (``headrace.core.outbox.signal_message``, docs/signals.md).
* ``notifications`` is keyed and partitioned like the run topics so that a
  run's notifications stay in order; it is for people-facing consumers (mail,
  chat, inboxes), never read by headrace itself.
* ``definitions`` is compacted on ``type@version`` and read whole by every
  worker (a global table); ``calendars`` and ``schedules`` likewise, on name,
  read whole by the timer service; ``control`` (drains) likewise, read whole by
  the ingress router and the orchestrator.
* ``tasks.<queue>`` topics are created on demand by the task service, keyed by
  task id; workers in any language consume them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from headrace.core.partitioner import partition_for


class Key(StrEnum):
    """What a topic's record key is."""

    RUN = "<tenant>/<run_id>"
    ANY = "any"
    DEFINITION = "<type>@<version>"
    TASK_ID = "<task id>"
    CORRELATION = "<tenant>/<correlation key or run id>"
    ORIGINAL = "original key"
    NAME = "<name>"


class Partitioning(StrEnum):
    """How a producer picks the partition."""

    TENANT = "tenant"  # headrace.core.partitioner.partition_for
    KEY_HASH = "key-hash"  # the client's default partitioner
    ECHOED = "echoed"  # the partition carried on the dispatch, echoed back


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One row of the topic table."""

    suffix: str
    key: Key
    partitioning: Partitioning
    written_by: tuple[str, ...]
    read_by: tuple[str, ...]
    doc: str
    compacted: bool = False
    run_partitioned: bool = True  # shares the run-topic partition count
    partitions: int | None = None  # fixed count, when not run-partitioned
    config: dict[str, str] = field(default_factory=dict)


RUN_WRITERS_ALL = ("ingress", "api", "timers", "tasks", "signals", "orchestrator")

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        "ingress",
        Key.ANY,
        Partitioning.KEY_HASH,
        ("users (CloudEvents, binary or structured mode)", "timer service (schedules)"),
        ("ingress router",),
        "CloudEvents from the outside world: starts, signals, trigger events.",
    ),
    TopicSpec(
        "commands",
        Key.RUN,
        Partitioning.TENANT,
        RUN_WRITERS_ALL,
        ("orchestrator",),
        "Commands addressed to a run; the orchestrator's only input. Never transactional.",
    ),
    TopicSpec(
        "events",
        Key.RUN,
        Partitioning.TENANT,
        ("orchestrator",),
        ("api/query", "exporters", "anyone"),
        "The Canonical Workflow Event log: every run's hash-chained history.",
        config={"retention.ms": "-1"},
    ),
    TopicSpec(
        "definitions",
        Key.DEFINITION,
        Partitioning.KEY_HASH,
        ("api", "cli deploy"),
        ("everyone (global table)",),
        "Workflow definitions, one record per type@version (immutable).",
        compacted=True,
        run_partitioned=False,
        partitions=1,
    ),
    TopicSpec(
        "timers",
        Key.RUN,
        Partitioning.TENANT,
        ("orchestrator", "tasks"),
        ("timer service",),
        "Arm / cancel / reset requests for durable timers.",
    ),
    TopicSpec(
        "calendars",
        Key.NAME,
        Partitioning.KEY_HASH,
        ("cli calendar", "api"),
        ("timer service",),
        "Business calendars (time zone, working hours, holidays), one record per name.",
        compacted=True,
        run_partitioned=False,
        partitions=1,
    ),
    TopicSpec(
        "schedules",
        Key.NAME,
        Partitioning.KEY_HASH,
        ("cli schedule", "api"),
        ("timer service",),
        "Cron schedules that start runs, one record per name.",
        compacted=True,
        run_partitioned=False,
        partitions=1,
    ),
    TopicSpec(
        "control",
        Key.NAME,
        Partitioning.KEY_HASH,
        ("cli drain/undrain", "api"),
        ("ingress router", "orchestrator", "cli drain status"),
        "Operator switches, one record per key: `drain/type/<type>`, `drain/tenant/<tenant>`; "
        "a tombstone lifts it.",
        compacted=True,
        run_partitioned=False,
        partitions=1,
    ),
    TopicSpec(
        "task-requests",
        Key.RUN,
        Partitioning.TENANT,
        ("orchestrator",),
        ("task service",),
        "Tasks the orchestrator wants done.",
    ),
    TopicSpec(
        "task-results",
        Key.RUN,
        Partitioning.ECHOED,
        ("workers", "connectors"),
        ("task service",),
        "Started / heartbeat / completed / failed reports from workers.",
    ),
    TopicSpec(
        "signals",
        Key.CORRELATION,
        Partitioning.KEY_HASH,
        ("ingress", "api", "orchestrator", "cli signal"),
        ("signal service",),
        "Signals, waits and broadcasts, keyed by address <tenant>/<correlation key or run id>.",
    ),
    TopicSpec(
        "notifications",
        Key.RUN,
        Partitioning.TENANT,
        ("orchestrator",),
        ("notifiers (mail, chat, pager)", "inbox UIs", "anyone"),
        "Messages for people: approval requests, reminders, escalations, delegations, "
        "SLA at-risk and breaches (JSON, docs/approvals.md).",
    ),
    TopicSpec(
        "dlq",
        Key.ORIGINAL,
        Partitioning.KEY_HASH,
        ("any service",),
        ("operators", "headrace dlq"),
        "Messages no service could process, with the reason in headers.",
        run_partitioned=False,
        partitions=1,
        config={"retention.ms": "-1"},
    ),
)

BY_SUFFIX: dict[str, TopicSpec] = {t.suffix: t for t in TOPICS}


def topic(name: str, prefix: str = "headrace.") -> str:
    """Full topic name for a table row (``topic("events") == "headrace.events"``)."""
    if name not in BY_SUFFIX and not name.startswith("tasks."):
        raise KeyError(f"unknown topic {name!r}; known: {', '.join(BY_SUFFIX)}, tasks.<queue>")
    return f"{prefix}{name}"


def task_topic(queue: str, prefix: str = "headrace.") -> str:
    """The dispatch topic workers of ``queue`` consume."""
    return f"{prefix}tasks.{queue}"


def task_dlq_topic(queue: str, prefix: str = "headrace.") -> str:
    """Where a task lands after its last attempt."""
    return f"{prefix}tasks.{queue}.dlq"


DEFAULT_PRIORITY = 5
PRIORITY_BANDS = (9, 8, 7, 6)
"""Priorities with a dispatch topic of their own, ``tasks.<queue>.p<band>``, highest
first; every priority up to :data:`DEFAULT_PRIORITY` shares ``tasks.<queue>``.
Workers drain the bands in this order, then the base topic (docs/tasks.md)."""


def task_band_topic(queue: str, priority: int, prefix: str = "headrace.") -> str:
    """The dispatch topic of a task of ``queue`` with ``priority`` (0 lowest .. 9 highest)."""
    base = task_topic(queue, prefix)
    return f"{base}.p{priority}" if priority in PRIORITY_BANDS else base


def task_topics(queue: str, prefix: str = "headrace.") -> list[str]:
    """Every dispatch topic of ``queue``, in the order workers drain them (highest first)."""
    base = task_topic(queue, prefix)
    return [f"{base}.p{band}" for band in PRIORITY_BANDS] + [base]


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names resolved for one prefix; services hold one of these."""

    prefix: str = "headrace."

    @property
    def ingress(self) -> str:
        return topic("ingress", self.prefix)

    @property
    def commands(self) -> str:
        return topic("commands", self.prefix)

    @property
    def events(self) -> str:
        return topic("events", self.prefix)

    @property
    def definitions(self) -> str:
        return topic("definitions", self.prefix)

    @property
    def timers(self) -> str:
        return topic("timers", self.prefix)

    @property
    def calendars(self) -> str:
        return topic("calendars", self.prefix)

    @property
    def schedules(self) -> str:
        return topic("schedules", self.prefix)

    @property
    def control(self) -> str:
        return topic("control", self.prefix)

    @property
    def task_requests(self) -> str:
        return topic("task-requests", self.prefix)

    @property
    def task_results(self) -> str:
        return topic("task-results", self.prefix)

    @property
    def signals(self) -> str:
        return topic("signals", self.prefix)

    @property
    def notifications(self) -> str:
        return topic("notifications", self.prefix)

    @property
    def dlq(self) -> str:
        return topic("dlq", self.prefix)

    def tasks(self, queue: str) -> str:
        return task_topic(queue, self.prefix)

    def tasks_dlq(self, queue: str) -> str:
        return task_dlq_topic(queue, self.prefix)

    def tasks_band(self, queue: str, priority: int) -> str:
        return task_band_topic(queue, priority, self.prefix)

    def task_bands(self, queue: str) -> list[str]:
        return task_topics(queue, self.prefix)


@dataclass(frozen=True, slots=True)
class Routing:
    """Topic names plus the tenant partitioner's parameters: where a run's messages go."""

    topics: Topics
    partitions: int
    spread: Mapping[str, int] = field(default_factory=dict)

    def partition(self, tenant: str, run_id: str) -> int:
        return partition_for(tenant, run_id, self.partitions, self.spread)
