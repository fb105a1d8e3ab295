"""Service levels: a run's or a step's ``sla`` arms two timers when it starts —
``sla_risk`` at ``at_risk`` of the deadline and ``sla_breach`` at the deadline.
They only record ``SlaAtRisk`` / ``SlaBreached`` (for dashboards, alerts and the
``notifications`` topic); nothing fails. A step's SLA timers are cancelled when
the step ends, the run's when the run ends. Business-time SLAs hand the calendar
to the timer service, with the at-risk point as a fraction (``fraction``) of the
business span.

``SlaAtRisk`` / ``SlaBreached`` payload: ``{scope: run | step, step, within?,
business?, at_risk, deadline}`` — ``deadline`` is epoch ms when it is known: for
``within`` SLAs the timers carry it (``TimerArmed.deadline``, echoed on the
``FireTimer`` command); for a business-time breach it is the moment the timer
service resolved (the command's time); for a business-time at-risk it is null.
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
        deadline = d.now + within
        timers.arm(d, flow, step, RISK, delay_ms=int(within * sla.at_risk), deadline=deadline)
        timers.arm(d, flow, step, BREACH, delay_ms=within, deadline=deadline)
    elif sla.business is not None:
        timers.arm(d, flow, step, RISK, business_time=sla.business, fraction=sla.at_risk)
        timers.arm(d, flow, step, BREACH, business_time=sla.business)


def fired(d: Decision, purpose: str, step: str | None) -> None:
    sla = d.definition.sla if step is None else getattr(d.ix.step(step), "sla", None)
    payload: dict[str, Any] = {"scope": "run" if step is None else "step", "step": step}
    deadline = d.command.payload.get("deadline")
    if not isinstance(deadline, int) or isinstance(deadline, bool):
        deadline = d.now if purpose == BREACH else None
    if sla is not None:
        payload["within"] = sla.within
        payload["at_risk"] = sla.at_risk
        if sla.business is not None:
            payload["business"] = sla.business.model_dump(exclude_none=True)
    payload["deadline"] = deadline
    d.emit(E.SlaAtRisk if purpose == RISK else E.SlaBreached, payload)
