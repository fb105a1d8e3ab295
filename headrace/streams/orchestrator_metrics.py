"""Prometheus metrics of the orchestrator (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

COMMANDS = Counter(
    "headrace_orchestrator_commands_total",
    "Commands processed, by outcome (applied, no-op, ignored, dead-lettered)",
    ["outcome"],
)
EVENTS = Counter("headrace_orchestrator_events_total", "Events appended to the events log")
REPLAYED = Counter(
    "headrace_orchestrator_replayed_events_total",
    "Events folded into snapshots during replay after taking a partition",
)
REBUILT = Counter(
    "headrace_orchestrator_rebuilt_snapshots_total",
    "Run snapshots rebuilt from the events log because they could not be read",
)
BATCH_SECONDS = Histogram(
    "headrace_orchestrator_batch_seconds",
    "Time to decide a batch and write its events, effects and snapshots",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BATCH_SIZE = Histogram(
    "headrace_orchestrator_batch_size",
    "Commands per batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
