"""Step durations summarised: what the SLA report and breach predictions read.

The run view closes one *sample* per step that ends (``StepStarted`` →
``StepCompleted``/``StepFailed``, in the run's logical time, with whether the
step's SLA was at risk or breached while it ran). :func:`summarize` turns the
samples of one ``(type, step)`` into counts and nearest-rank percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

PERCENTILES = (50, 90, 95, 99)


def percentile(sorted_values: list[int], pct: float) -> int | None:
    """Nearest-rank percentile of already sorted values (None when there are none)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(samples: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """``{count, completed, failed, at_risk, breached, min_ms, max_ms, mean_ms, p50_ms,
    p90_ms, p95_ms, p99_ms}`` of step samples (durations of every outcome)."""
    durations: list[int] = []
    completed = failed = at_risk = breached = 0
    for s in samples:
        durations.append(int(s["duration_ms"]))
        if s.get("outcome") == "completed":
            completed += 1
        else:
            failed += 1
        at_risk += bool(s.get("at_risk"))
        breached += bool(s.get("breached"))
    durations.sort()
    out: dict[str, Any] = {
        "count": len(durations),
        "completed": completed,
        "failed": failed,
        "at_risk": at_risk,
        "breached": breached,
        "min_ms": durations[0] if durations else None,
        "max_ms": durations[-1] if durations else None,
        "mean_ms": round(sum(durations) / len(durations), 1) if durations else None,
    }
    for pct in PERCENTILES:
        out[f"p{pct}_ms"] = percentile(durations, pct)
    return out
