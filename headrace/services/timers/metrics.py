"""Prometheus metrics of the timer service (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ARMED = Counter("headrace_timers_armed_total", "Timers armed (new timer ids)")
DUPLICATE_ARMS = Counter(
    "headrace_timers_duplicate_arms_total", "Arms of a timer id already armed (replays)"
)
CANCELLED = Counter("headrace_timers_cancelled_total", "Timers cancelled while armed or frozen")
RESET = Counter("headrace_timers_reset_total", "Timers moved to another due time")
FROZEN = Counter("headrace_timers_frozen_total", "Timers frozen (their run was suspended)")
THAWED = Counter("headrace_timers_thawed_total", "Frozen timers re-armed")
FIRED = Counter("headrace_timers_fired_total", "Timers fired (command acknowledged by Kafka)")
REJECTED = Counter("headrace_timers_rejected_total", "`timers` messages sent to the DLQ", ["code"])
UNKNOWN_CALENDAR = Counter(
    "headrace_timers_unknown_calendar_total",
    "Business-time timers armed against a calendar that does not exist (resolved 24x7)",
    ["calendar"],
)
FIRE_ERRORS = Counter("headrace_timers_fire_errors_total", "Fire rounds whose produce failed")
DRIFT = Histogram(
    "headrace_timers_drift_seconds",
    "Fire time (command acknowledged) minus due time",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
BACKLOG = Gauge(
    "headrace_timers_backlog",
    "Due timers not fired yet (counted up to HEADRACE_TIMERS_BACKLOG_CAP)",
    ["partition"],
)
LAG = Gauge(
    "headrace_timers_backlog_seconds",
    "How overdue the oldest unfired timer of the partition is",
    ["partition"],
)
ACTIVE_PARTITIONS = Gauge(
    "headrace_timers_active_partitions", "Partitions this worker owns and fires"
)
SCHEDULE_FIRED = Counter(
    "headrace_schedule_fired_total", "Schedule firings (start events acknowledged)", ["schedule"]
)
SCHEDULE_SKIPPED = Counter(
    "headrace_schedule_skipped_total",
    "Schedule firings skipped",
    ["schedule", "reason"],  # reason: late (outside the catch-up window) | overlap
)
SCHEDULE_OVERLAP_UNKNOWN = Counter(
    "headrace_schedule_overlap_unknown_total",
    "Firings of skip/buffer_one schedules made without knowing if the last run still runs",
    ["schedule"],
)
