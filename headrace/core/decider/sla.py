"""Service levels: a run's or a step's ``sla`` arms two timers when it starts —
``sla_risk`` at ``at_risk`` of the deadline and ``sla_breach`` at the deadline.
They only record ``SlaAtRisk`` / ``SlaBreached`` (for dashboards and alerts);
nothing fails. A step's SLA timers are cancelled when the step ends, the
run's when the run ends. Business-time SLAs hand the calendar to the timer
service, with the at-risk point as a fraction (``fraction``) of the business span.
"""

from __future__ import annotations

from typing import Any

from headrace.core.decider import timers
from headrace.core.decider.context import Decision
from headrace.core.dsl.model import Sla
from headrace.core.durations import parse_duration
from headrace.core.envelope import EventType as E

RISK = "sla_risk"
BREACH = "sla_breach"


def arm(d: Decision, flow: str, step: str | None, sla: Sla) -> None:
    if sla.within is not None:
        within = parse_duration(sla.within)
        timers.arm(d, flow, step, RISK, delay_ms=int(within * sla.at_risk))
        timers.arm(d, flow, step, BREACH, delay_ms=within)
    elif sla.business is not None:
        timers.arm(d, flow, step, RISK, business_time=sla.business, fraction=sla.at_risk)
        timers.arm(d, flow, step, BREACH, business_time=sla.business)


def fired(d: Decision, purpose: str, step: str | None) -> None:
    sla = d.definition.sla if step is None else getattr(d.ix.step(step), "sla", None)
    payload: dict[str, Any] = {"scope": "run" if step is None else "step", "step": step}
    if sla is not None:
        payload["within"] = sla.within
        if sla.business is not None:
            payload["business"] = sla.business.model_dump(exclude_none=True)
    d.emit(E.SlaAtRisk if purpose == RISK else E.SlaBreached, payload)
