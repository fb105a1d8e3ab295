"""Prometheus metrics of the task service (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DISPATCHED = Counter(
    "headrace_tasks_dispatched_total", "Task attempts dispatched to workers", ["queue"]
)
RESULTS = Counter("headrace_tasks_results_total", "Worker results applied", ["kind"])
STALE = Counter(
    "headrace_tasks_stale_results_total",
    "Worker results ignored: unknown task, another attempt, or a task that already ended",
    ["kind", "reason"],  # reason: unknown | attempt | finished
)
DUPLICATE_REQUESTS = Counter(
    "headrace_tasks_duplicate_requests_total",
    "task-requests for a task already known (orchestrator replays, redeliveries)",
    ["op"],
)
DUPLICATE_STARTS = Counter(
    "headrace_tasks_duplicate_starts_total",
    "`started` from a second worker for an attempt already leased (a redelivered dispatch)",
)
TIMEOUTS = Counter("headrace_tasks_timeouts_total", "Attempts timed out", ["timeout"])
DEAD_LETTERED = Counter(
    "headrace_tasks_dead_lettered_total",
    "Tasks written to their queue's DLQ after their last attempt",
    ["queue", "reason"],  # reason: exhausted | non_retryable
)
CANCELLED = Counter("headrace_tasks_cancelled_total", "Live task attempts cancelled by the run")
REJECTED = Counter(
    "headrace_tasks_rejected_total", "Unreadable requests/results sent to the DLQ", ["topic"]
)
BATCH_SECONDS = Histogram(
    "headrace_tasks_batch_seconds",
    "Time to handle one batch of requests and results, produce included",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
LATE = Histogram(
    "headrace_tasks_deadline_late_seconds",
    "Time a timeout was acted on minus its deadline",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
ACTIVE_PARTITIONS = Gauge(
    "headrace_tasks_active_partitions", "Partitions this worker owns and watches deadlines of"
)
