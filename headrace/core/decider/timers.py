"""Arming timers. A timer is an effect the timer service keeps; when due it
sends ``FireTimer {timer_id}`` back, and the timer's *purpose* says what the
run does then:

=================  ========================================================
``wait``           a ``wait`` step is over
``retry``          a task's backoff is over: schedule its next attempt
``signal``         a ``wait_signal`` timed out
``expiry``         an approval expired (escalate, or go to ``escalation``)
``remind``         remind approvers who have not decided
``run``            the run hit its ``timeout``
``sla_risk``       a run or step SLA is at risk (see :mod:`.sla`)
``sla_breach``     a run or step SLA is breached
=================  ========================================================

``TimerArmed`` payload: ``{timer_id, flow, step, purpose, due[, deadline]}`` where
``due`` is epoch ms — or ``null`` with ``business: {calendar, duration_ms |
days, from[, fraction]}`` for business time, which the timer service resolves
against the named calendar: the moment ``fraction`` (default 1) of the
business span after ``from`` (the run's logical time at arming).
"""

from __future__ import annotations

from typing import Any

from headrace.core.decider.context import Decision
from headrace.core.dsl.model import BusinessTime
from headrace.core.durations import parse_duration
from headrace.core.envelope import EventType as E

RUN_FLOW = "*"  # timers that belong to the run, not to a flow


def business(spec: BusinessTime, start: int) -> dict[str, Any]:
    out: dict[str, Any] = {"calendar": spec.calendar, "from": start}
    if spec.days is not None:
        out["days"] = spec.days
    if spec.duration is not None:
        out["duration_ms"] = parse_duration(spec.duration)
    return out


def arm(
    d: Decision,
    flow: str,
    step: str | None,
    purpose: str,
    *,
    delay_ms: int | None = None,
    due: int | None = None,
    business_time: BusinessTime | None = None,
    calendar_ms: tuple[str, int] | None = None,
    fraction: float | None = None,
    deadline: int | None = None,
) -> str:
    """Arm a timer; returns its id. Give one of ``delay_ms``, ``due``,
    ``business_time`` or ``calendar_ms`` (a calendar name and a business duration).
    ``deadline`` (epoch ms) rides on the timer's ``FireTimer`` command back to the
    run — an SLA timer tells the decision it causes when the SLA ends."""
    timer_id = d.next_id()
    payload: dict[str, Any] = {"timer_id": timer_id, "flow": flow, "step": step, "purpose": purpose}
    if deadline is not None:
        payload["deadline"] = deadline
    if business_time is not None:
        payload["due"] = None
        payload["business"] = business(business_time, d.now)
        if fraction is not None:
            payload["business"]["fraction"] = fraction
    elif calendar_ms is not None:
        payload["due"] = None
        payload["business"] = {
            "calendar": calendar_ms[0],
            "duration_ms": calendar_ms[1],
            "from": d.now,
        }
    else:
        payload["due"] = due if due is not None else d.now + (delay_ms or 0)
    d.emit(E.TimerArmed, payload)
    return timer_id
