"""Prometheus metrics of the signal service (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter(
    "headrace_signals_messages_total", "`signals` messages handled", ["op", "outcome"]
)
DELIVERED = Counter(
    "headrace_signals_delivered_total",
    "DeliverSignal commands acknowledged by Kafka",
    ["addressed"],  # correlation | run | broadcast
)
BUFFERED = Counter(
    "headrace_signals_buffered_total", "Signals kept because no run waited for them yet"
)
TAKEN = Counter("headrace_signals_taken_total", "Offered signals a wait took (its run recorded it)")
RETURNED = Counter(
    "headrace_signals_returned_total",
    "Offers a wait did not take (timed out, cancelled, took another): back to the buffer",
)
EXPIRED = Counter(
    "headrace_signals_expired_total", "Buffered signals dropped after HEADRACE_SIGNAL_BUFFER_TTL"
)
DUPLICATES = Counter(
    "headrace_signals_duplicates_total", "Signals and awaits seen before (redeliveries, re-sends)"
)
BROADCASTS = Counter("headrace_signals_broadcasts_total", "Broadcasts resolved and delivered")
BROADCAST_TARGETS = Counter(
    "headrace_signals_broadcast_targets_total", "Runs a broadcast was delivered to"
)
REJECTED = Counter(
    "headrace_signals_rejected_total", "`signals` messages sent to the DLQ", ["code"]
)
BATCH_SECONDS = Histogram(
    "headrace_signals_batch_seconds",
    "Time to handle one batch of `signals` messages, commands acknowledged",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
ACTIVE_PARTITIONS = Gauge(
    "headrace_signals_active_partitions", "Partitions this worker owns (tables recovered)"
)
SWEEPS = Counter("headrace_signals_sweeps_total", "Expiry sweeps over the owned partitions")
