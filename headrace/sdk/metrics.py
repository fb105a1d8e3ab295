"""Prometheus metrics of a worker process (served at ``/metrics`` when a port is given)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TASKS = Counter(
    "headrace_worker_tasks_total",
    "Task attempts a worker finished, by queue and outcome (completed, failed, cancelled)",
    ["queue", "outcome"],
)
FAILURES = Counter(
    "headrace_worker_failures_total",
    "Failed attempts by queue, code and retryability",
    ["queue", "code", "retryable"],
)
SECONDS = Histogram(
    "headrace_worker_task_seconds",
    "Time a handler took, by queue",
    ["queue"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
IN_FLIGHT = Gauge("headrace_worker_in_flight", "Task attempts running now")
DUPLICATES = Counter(
    "headrace_worker_duplicate_dispatches_total",
    "Dispatches delivered again for an attempt this process runs or has answered",
    ["queue"],
)
DEAD_LETTERED = Counter(
    "headrace_worker_dead_lettered_total",
    "Dispatch records that could not be decoded and went to the dlq topic",
    ["queue"],
)


class QueueMetrics:
    """The per-queue children of the metrics above, looked up once (``labels`` is slow)."""

    __slots__ = ("cancelled", "completed", "failed", "seconds")

    def __init__(self, queue: str) -> None:
        self.completed = TASKS.labels(queue, "completed")
        self.failed = TASKS.labels(queue, "failed")
        self.cancelled = TASKS.labels(queue, "cancelled")
        self.seconds = SECONDS.labels(queue)


_BY_QUEUE: dict[str, QueueMetrics] = {}


def of_queue(queue: str) -> QueueMetrics:
    m = _BY_QUEUE.get(queue)
    if m is None:
        m = _BY_QUEUE[queue] = QueueMetrics(queue)
    return m
