"""SLA report and breach prediction, from step samples and run views (pure).

**Report.** Per ``(type, step)`` whose step has an SLA — and per type for the
run's own SLA (``step`` null, ``scope: run``) — how many ended within the window
met it, came near (``at_risk``: the near-breach mark passed but the deadline did
not) or breached it; duration percentiles; and the open ones: how many are
running now, how many are at risk or breached already, how many are predicted
to breach.

**Prediction.** For an open step (or run) with an SLA, ``elapsed`` = now - its
start and ``budget`` = its deadline - its start. From the durations of the same
step (same workflow type) that *completed* in the window, keep those longer
than ``elapsed`` — the past runs that were where this one is now — and read off

* ``probability`` = the share of them that took longer than ``budget``
  (an empirical P(duration > budget | duration > elapsed));
* ``expected_ms`` / ``p90_ms`` = their median and 90th percentile: when this one
  should end, measured from its start.

``verdict`` is ``breached`` (the deadline passed), ``likely`` (probability ≥
0.5), ``possible`` (≥ 0.1), ``unlikely`` — or ``unknown`` when there is no
deadline (a business-time SLA whose calendar the caller cannot resolve), no
history, or the step already took longer than every past one
(``beyond_history``). Business-time deadlines are resolved by the caller
(``resolve``, e.g. against the ``calendars`` topic); durations are compared in
wall-clock time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from headrace.core.views.stats import percentile

LIKELY = 0.5
POSSIBLE = 0.1
VERDICTS = ("breached", "likely", "possible", "unlikely", "unknown")


def predict(
    elapsed_ms: int, budget_ms: int | None, durations: list[int], *, breached: bool = False
) -> dict[str, Any]:
    """The prediction for one open step; ``durations`` sorted ascending (completed ones)."""
    survivors = [d for d in durations if d > elapsed_ms]
    out: dict[str, Any] = {
        "elapsed_ms": elapsed_ms,
        "budget_ms": budget_ms,
        "basis": len(survivors),
        "history": len(durations),
        "expected_ms": percentile(survivors, 50),
        "p90_ms": percentile(survivors, 90),
        "probability": None,
        "beyond_history": bool(durations) and not survivors,
    }
    if breached or (budget_ms is not None and elapsed_ms >= budget_ms):
        out.update(verdict="breached", probability=1.0)
        return out
    if budget_ms is None or not survivors:
        out["verdict"] = "unknown"
        return out
    p = sum(1 for d in survivors if d > budget_ms) / len(survivors)
    out["probability"] = round(p, 3)
    out["verdict"] = "likely" if p >= LIKELY else "possible" if p >= POSSIBLE else "unlikely"
    return out


def _row(wtype: str, step: str | None) -> dict[str, Any]:
    return {
        "type": wtype,
        "step": step,
        "scope": "run" if step is None else "step",
        "ended": 0,
        "met": 0,
        "at_risk": 0,
        "breached": 0,
        "met_ratio": None,
        "p50_ms": None,
        "p90_ms": None,
        "open": 0,
        "open_at_risk": 0,
        "open_breached": 0,
        "predicted_breaches": 0,
    }


def report(
    ended: Iterable[dict[str, Any]],
    open_items: Iterable[dict[str, Any]],
    durations: dict[tuple[str, str | None], list[int]],
    now: int,
    resolve: Callable[[dict[str, Any]], int | None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(rows, predictions)``.

    ``ended``: ``{type, step, duration_ms, at_risk, breached}`` of SLA-bearing steps
    (or runs, ``step`` None) that ended in the window. ``open_items``: ``{type, step,
    tenant, run_id, flow, since, due, business, at_risk, breached}`` of those still
    open. ``durations``: completed durations per ``(type, step)``, for the prediction.
    ``resolve(business)``: the deadline of a business-time SLA, or None.
    """
    rows: dict[tuple[str, str | None], dict[str, Any]] = {}
    spans: dict[tuple[str, str | None], list[int]] = {}
    for s in ended:
        key = (s["type"], s["step"])
        row = rows.setdefault(key, _row(*key))
        row["ended"] += 1
        spans.setdefault(key, []).append(int(s["duration_ms"]))
        if s.get("breached"):
            row["breached"] += 1
        else:
            row["met"] += 1
            row["at_risk"] += bool(s.get("at_risk"))
    predictions = []
    for item in open_items:
        key = (item["type"], item["step"])
        row = rows.setdefault(key, _row(*key))
        row["open"] += 1
        row["open_breached"] += bool(item.get("breached"))
        row["open_at_risk"] += bool(item.get("at_risk")) and not item.get("breached")
        since, due = item["since"], item.get("due")
        if due is None and item.get("business") and resolve is not None:
            due = item["due"] = resolve(item["business"])
        history = sorted(durations.get(key, []))
        guess = predict(
            max(0, now - since),
            None if due is None else due - since,
            history,
            breached=bool(item.get("breached")),
        )
        if guess["verdict"] == "likely":
            row["predicted_breaches"] += 1
        predictions.append({**item, **guess})
    for key, row in rows.items():
        values = sorted(spans.get(key, []))
        row["p50_ms"] = percentile(values, 50)
        row["p90_ms"] = percentile(values, 90)
        if row["ended"]:
            row["met_ratio"] = round(row["met"] / row["ended"], 4)
    order = {v: i for i, v in enumerate(VERDICTS)}
    predictions.sort(key=lambda p: (order[p["verdict"]], -(p["probability"] or 0), p["since"]))
    ordered = [rows[k] for k in sorted(rows, key=lambda k: (k[0], k[1] is not None, k[1] or ""))]
    return ordered, predictions


def open_items(view: dict[str, Any]) -> list[dict[str, Any]]:
    """The SLA-bearing parts of a live run view: the run itself and its active steps."""
    base = {"tenant": view["tenant"], "run_id": view["run_id"], "type": view["type"]}
    out = []
    sla = view.get("sla") or {}
    if sla.get("due") is not None or sla.get("business") is not None:
        out.append(
            {
                **base,
                "step": None,
                "flow": None,
                "since": view["started_at"],
                "due": sla.get("due"),
                "business": sla.get("business"),
                "at_risk": bool(sla.get("at_risk")),
                "breached": bool(sla.get("breached")),
            }
        )
    for flow, active in view["active_steps"].items():
        step_sla = active.get("sla")
        if step_sla is None:
            continue
        out.append(
            {
                **base,
                "step": active["step"],
                "flow": flow,
                "since": active["since"],
                "due": step_sla.get("due"),
                "business": step_sla.get("business"),
                "at_risk": bool(active.get("at_risk")),
                "breached": bool(active.get("breached")),
            }
        )
    return out


def ended_run(view: dict[str, Any]) -> dict[str, Any] | None:
    """A finished run with an SLA as an ``ended`` entry of :func:`report` (else None)."""
    sla = view.get("sla") or {}
    if view.get("ended_at") is None:
        return None
    if sla.get("due") is None and sla.get("business") is None:
        return None
    return {
        "type": view["type"],
        "step": None,
        "duration_ms": max(0, view["ended_at"] - view["started_at"]),
        "at_risk": bool(sla.get("at_risk")),
        "breached": bool(sla.get("breached")),
        "status": view["status"],
    }
