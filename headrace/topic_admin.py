"""Create and inspect headrace's topics on a cluster (``headrace topics ensure|list``).

The topic table lives in :mod:`headrace.topology`; this module turns it into
``CreateTopics`` requests. ``ensure`` is idempotent: it creates what is
missing, leaves what exists alone and reports any difference between what
exists and what the table asks for (a partition count that differs breaks the
co-partitioning of run-keyed topics, so it is worth a loud warning).

Replication and ``min.insync.replicas`` not set explicitly (flag, env or config
file) are left to the broker's defaults, so the same command gives RF 1 on a
one-node dev broker and RF 3 / min ISR 2 on the three-node cluster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, ConfigResource, NewTopic

from headrace.errors import ErrorCode, HeadraceError
from headrace.kafka import make_admin
from headrace.settings import Settings
from headrace.topology import TOPICS

USE_BROKER_DEFAULT = -1
REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class TopicPlan:
    """A topic as it should exist."""

    name: str
    partitions: int
    replication: int  # USE_BROKER_DEFAULT: the broker's default.replication.factor
    config: dict[str, str]

    @property
    def cleanup_policy(self) -> str:
        return self.config.get("cleanup.policy", "delete")


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic as it exists on the cluster."""

    name: str
    partitions: int
    replication: int
    cleanup_policy: str
    config: dict[str, str] = field(default_factory=dict)


@dataclass
class EnsureReport:
    """What ``ensure`` did: topics created, topics found, and warnings about found ones."""

    created: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


def plan_topics(
    settings: Settings, partitions: int | None = None, replication: int | None = None
) -> list[TopicPlan]:
    """Every topic of the table under ``settings.topic_prefix``, with its partitions and config."""
    run_partitions = partitions if partitions is not None else settings.partitions
    if replication is None and "replication_factor" in settings.model_fields_set:
        replication = settings.replication_factor
    plans = []
    for spec in TOPICS:
        config = {"cleanup.policy": "compact" if spec.compacted else "delete", **spec.config}
        if settings.min_insync_replicas is not None:
            config["min.insync.replicas"] = str(settings.min_insync_replicas)
        count = run_partitions if spec.run_partitioned else (spec.partitions or 1)
        plans.append(
            TopicPlan(
                name=f"{settings.topic_prefix}{spec.suffix}",
                partitions=count,
                replication=replication if replication is not None else USE_BROKER_DEFAULT,
                config=config,
            )
        )
    return plans


def _metadata(admin: AdminClient, settings: Settings) -> ClusterMetadata:
    try:
        return admin.list_topics(timeout=10.0)
    except KafkaException as exc:
        raise HeadraceError(
            ErrorCode.KAFKA_UNAVAILABLE,
            f"cannot reach Kafka at {settings.bootstrap}: {exc.args[0]} — start one with "
            "`headrace dev kafka up` or point HEADRACE_BOOTSTRAP at a running cluster",
        ) from exc


def _configs(admin: AdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names]
    futures = admin.describe_configs(resources, request_timeout=REQUEST_TIMEOUT_S)
    out: dict[str, dict[str, str]] = {}
    for resource, future in futures.items():
        entries = future.result()
        out[resource.name] = {k: str(e.value) for k, e in entries.items()}
    return out


def ensure(
    settings: Settings, plans: list[TopicPlan], admin: AdminClient | None = None
) -> EnsureReport:
    """Create the planned topics that are missing; report those found with other settings."""
    admin = admin or make_admin(settings)
    meta = _metadata(admin, settings)
    brokers = len(meta.brokers)
    for p in plans:
        if p.replication > brokers:
            raise HeadraceError(
                ErrorCode.CONFIG_INVALID,
                f"topic {p.name} wants replication {p.replication} but the cluster at "
                f"{settings.bootstrap} has {brokers} broker(s) — lower --replication "
                "(HEADRACE_REPLICATION_FACTOR) or start more brokers (`headrace dev kafka up "
                "--brokers 3`)",
            )
    report = EnsureReport()
    missing = [p for p in plans if p.name not in meta.topics]
    if missing:
        futures = admin.create_topics(
            [NewTopic(p.name, p.partitions, p.replication, config=dict(p.config)) for p in missing],
            request_timeout=REQUEST_TIMEOUT_S,
        )
        for p in missing:
            try:
                futures[p.name].result()
                report.created.append(p.name)
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise _create_failed(p, err) from exc
        _wait_visible(admin, report.created)
    report.found = [p.name for p in plans if p.name not in report.created]
    existing = {t.name: t for t in describe(admin, report.found)}
    for p in plans:
        if p.name in existing:
            report.mismatches.extend(_differences(p, existing[p.name]))
    return report


def ensure_topics(
    settings: Settings,
    partitions: int | None = None,
    replication: int | None = None,
    admin: AdminClient | None = None,
) -> EnsureReport:
    """Create every topic of the table under ``settings.topic_prefix`` (idempotent)."""
    return ensure(settings, plan_topics(settings, partitions, replication), admin)


def plan_task_topics(settings: Settings, queue: str) -> list[TopicPlan]:
    """The topics of one task queue: its dispatch topics (one per priority band) and its DLQ."""
    replication = (
        settings.replication_factor
        if "replication_factor" in settings.model_fields_set
        else USE_BROKER_DEFAULT
    )
    base: dict[str, str] = {"cleanup.policy": "delete"}
    if settings.min_insync_replicas is not None:
        base["min.insync.replicas"] = str(settings.min_insync_replicas)
    topics = settings.topics
    plans = [
        TopicPlan(name, settings.partitions, replication, dict(base))
        for name in topics.task_bands(queue)
    ]
    dlq = {**base, "retention.ms": "-1"}
    plans.append(TopicPlan(topics.tasks_dlq(queue), 1, replication, dlq))
    return plans


def ensure_task_topics(
    settings: Settings, queue: str, admin: AdminClient | None = None
) -> EnsureReport:
    """Create the dispatch and DLQ topics of ``queue`` if missing (idempotent).

    The task service calls it the first time it sees a queue; a worker may call
    it before it subscribes, so that it can subscribe to every band at once.
    """
    return ensure(settings, plan_task_topics(settings, queue), admin)


def _create_failed(plan: TopicPlan, err: KafkaError) -> HeadraceError:
    retryable = err.retriable()
    return HeadraceError(
        ErrorCode.KAFKA_UNAVAILABLE if retryable else ErrorCode.CONFIG_INVALID,
        f"creating topic {plan.name} ({plan.partitions} partitions, replication "
        f"{plan.replication if plan.replication > 0 else 'broker default'}, {plan.config}) "
        f"failed: {err.str()} ({err.name()})",
        retryable=retryable,
    )


def _wait_visible(admin: AdminClient, names: list[str], timeout: float = REQUEST_TIMEOUT_S) -> None:
    """Wait until created topics have a leader for every partition in the broker's metadata.

    CreateTopics answers once the controller has recorded the topics; the
    brokers learn of them a moment later. Callers produce right after ensure.
    """
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        meta = admin.list_topics(timeout=5.0)
        for name in list(pending):
            t = meta.topics.get(name)
            if (
                t
                and t.error is None
                and t.partitions
                and all(p.leader >= 0 for p in t.partitions.values())
            ):
                pending.discard(name)
        if pending and time.monotonic() > deadline:
            raise HeadraceError(
                ErrorCode.KAFKA_TIMEOUT,
                f"topics {sorted(pending)} were created but have no leader after {timeout}s",
            )
        if pending:
            time.sleep(0.1)


def _differences(plan: TopicPlan, have: TopicInfo) -> list[str]:
    out = []
    if have.partitions != plan.partitions:
        out.append(
            f"{plan.name} has {have.partitions} partitions, the table wants {plan.partitions}"
            " (run-keyed topics must share one partition count; recreate it or set "
            "HEADRACE_PARTITIONS to match)"
        )
    if plan.replication > 0 and have.replication != plan.replication:
        out.append(f"{plan.name} has replication {have.replication}, wanted {plan.replication}")
    for key, want in plan.config.items():
        got = have.config.get(key)
        if got is not None and got != want:
            out.append(f"{plan.name} has {key}={got}, wanted {want}")
    return out


def describe(admin: AdminClient, names: list[str]) -> list[TopicInfo]:
    """Partitions, replication and config of existing topics, in the order given."""
    if not names:
        return []
    meta = admin.list_topics(timeout=10.0)
    configs = _configs(admin, [n for n in names if n in meta.topics])
    out = []
    for name in names:
        t = meta.topics.get(name)
        if t is None:
            continue
        parts = list(t.partitions.values())
        config = configs.get(name, {})
        out.append(
            TopicInfo(
                name=name,
                partitions=len(parts),
                replication=len(parts[0].replicas) if parts else 0,
                cleanup_policy=config.get("cleanup.policy", "?"),
                config=config,
            )
        )
    return out


def list_topics(settings: Settings, all_topics: bool = False) -> list[TopicInfo]:
    """Topics under ``settings.topic_prefix`` (every non-internal topic with ``all_topics``)."""
    admin = make_admin(settings)
    meta = _metadata(admin, settings)
    names = sorted(
        n
        for n in meta.topics
        if (all_topics and not n.startswith("__")) or n.startswith(settings.topic_prefix)
    )
    return describe(admin, names)
