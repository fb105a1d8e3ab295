"""Approval steps: a human decision with a quorum.

Who may decide: a named assignee (from ``assignees`` and ``assignees_from``)
or, unless the quorum is ``serial``, anyone whose ``roles`` (carried on the
command, vouched for by the api) include one of the step's roles. With
``serial`` only the next assignee in order may decide. A decision by anyone
else, a second decision by the same user, one without the required
second factor (``step_up``, see :mod:`.step_up`) or with data that fails
``form`` is recorded as ``ApprovalDecisionRefused`` and changes nothing.

Quorum: ``serial`` and ``parallel`` need every named assignee (``parallel``
with only roles needs one approval), ``threshold`` needs ``threshold``
approvals. Rejections: with ``veto`` any rejection rejects; ``serial`` and
``parallel`` reject on the first rejection (all were needed); ``threshold``
rejects once too few named assignees are left to reach k (with role-based
approvers the pool is open, so only a veto or the expiry ends it).

Expiry: with ``escalate_to_role`` the first expiry adds that role to the
approvers (``ApprovalEscalated``) and re-arms the expiry; then, or without
it, ``ApprovalExpired`` goes to ``escalation`` or fails with
``approval.expired``. Reminders (``ApprovalReminderSent``) repeat ``every``
until ``max`` while the approval is open.

Decisions carry their reason as ``comment``; a delegation's ``reason`` is kept
on ``ApprovalDelegated``. ``ApprovalRequested``, ``ApprovalEscalated`` and
``ApprovalReminderSent`` say when the approval expires (``expires: {due,
business}`` or null), for notifications and inboxes.

The step's result is ``{outcome, decisions: [{user, decision, comment?, data?}]}``.
"""

from __future__ import annotations

from typing import Any

import jsonschema

from headrace.core.decider import flows, step_up, timers
from headrace.core.decider.context import Decision
from headrace.core.decider.errors import (
    APPROVAL_EXPIRED,
    APPROVAL_REJECTED,
    EXPRESSION_FAILED,
    StepError,
)
from headrace.core.decider.state import Flow
from headrace.core.dsl.model import ApprovalStep, Quorum
from headrace.core.durations import parse_duration
from headrace.core.envelope import EventType as E


def begin(d: Decision, flow: Flow, step: ApprovalStep) -> None:
    assignees = list(step.assignees)
    if step.assignees_from is not None:
        more = d.evaluate(step.name, "assignees_from", flow.data, flow)
        if not isinstance(more, list) or not all(isinstance(u, str) for u in more):
            raise StepError(
                EXPRESSION_FAILED,
                f"assignees_from of {step.name!r} gave {more!r}; it must give a list of user names",
            )
        assignees.extend(u for u in more if u not in assignees)
    threshold = step.quorum is Quorum.THRESHOLD
    need = (step.threshold or 1) if threshold else (len(assignees) or 1)
    payload: dict[str, Any] = {
        "approval_id": d.next_id(),
        "flow": flow.id,
        "step": step.name,
        "assignees": assignees,
        "roles": list(step.roles),
        "quorum": step.quorum.value,
        "need": need,
        "veto": step.veto,
        "delegation": step.delegation,
        "step_up": step_up.policy(step.step_up),
        "expires": _expires(d, step),
    }
    if step.form is not None:
        payload["form"] = step.form
    d.emit(E.ApprovalRequested, payload)
    _arm_expiry(d, flow, step)
    if step.reminders is not None:
        _arm_reminder(d, flow, step)


def _expires(d: Decision, step: ApprovalStep) -> dict[str, Any] | None:
    """When the expiry armed now will fire: ``{due, business}`` (``due`` null for
    business time, which the timer service resolves), or None without an expiry."""
    if step.expiry is not None:
        return {"due": d.now + parse_duration(step.expiry), "business": None}
    if step.expiry_business is not None:
        return {"due": None, "business": timers.business(step.expiry_business, d.now)}
    return None


def _arm_expiry(d: Decision, flow: Flow, step: ApprovalStep) -> None:
    if step.expiry is not None:
        timers.arm(d, flow.id, step.name, "expiry", delay_ms=parse_duration(step.expiry))
    elif step.expiry_business is not None:
        timers.arm(d, flow.id, step.name, "expiry", business_time=step.expiry_business)


def _arm_reminder(d: Decision, flow: Flow, step: ApprovalStep) -> None:
    r = step.reminders
    assert r is not None
    every = parse_duration(r.every)
    if r.calendar is not None:
        timers.arm(d, flow.id, step.name, "remind", calendar_ms=(r.calendar, every))
    else:
        timers.arm(d, flow.id, step.name, "remind", delay_ms=every)


def _approved(sub: dict[str, Any]) -> list[str]:
    return [x["user"] for x in sub["decisions"] if x["decision"] == "approve"]


def _rejected(sub: dict[str, Any]) -> list[str]:
    return [x["user"] for x in sub["decisions"] if x["decision"] == "reject"]


def _eligible(sub: dict[str, Any], user: str, roles: list[str]) -> str | None:
    """Why ``user`` may not decide now, or ``None`` if they may."""
    assignees = sub["assignees"]
    if sub["quorum"] == Quorum.SERIAL.value:
        done = len(_approved(sub))
        current = assignees[done] if done < len(assignees) else None
        if user != current:
            return f"not the current approver (waiting for {current})"
        return None
    if user in assignees or any(r in sub["roles"] for r in roles):
        return None
    return "not an assignee and has none of the approver roles"


def _refuse(d: Decision, flow: Flow, step: ApprovalStep, user: Any, reason: str) -> None:
    d.emit(
        E.ApprovalDecisionRefused,
        {
            "approval_id": flow.sub["approval"],
            "flow": flow.id,
            "step": step.name,
            "user": user,
            "reason": reason,
        },
    )


def decided(d: Decision, flow: Flow, step: ApprovalStep, approval_id: str) -> None:
    p = d.command.payload
    sub = flow.sub
    if any(x["command"] == d.command.command_id for x in sub["decisions"]):
        return  # a redelivery of a decision already recorded
    user = p.get("user")
    decision = p.get("decision")
    roles = p.get("roles") or []
    reason = None
    if decision not in ("approve", "reject"):
        reason = f"decision must be 'approve' or 'reject', not {decision!r}"
    elif not isinstance(user, str) or not user:
        reason = "the decision names no user"
    elif any(x["user"] == user for x in sub["decisions"]):
        reason = f"{user} has already decided"
    else:
        reason = _eligible(sub, user, roles if isinstance(roles, list) else [])
    if reason is None:
        reason = step_up.refusal(sub["step_up"], p.get("step_up"), d.now)
    if reason is None and step.form is not None and decision == "approve":
        try:
            jsonschema.validate(p.get("data", {}), step.form)
        except jsonschema.ValidationError as exc:
            reason = f"decision data does not match the form: {exc.message}"
        except jsonschema.SchemaError as exc:
            reason = f"the form of {step.name!r} is not a valid JSON Schema: {exc.message}"
    if reason is not None:
        _refuse(d, flow, step, user, reason)
        return
    payload = {"approval_id": approval_id, "flow": flow.id, "step": step.name, "user": user}
    for key in ("comment", "data", "on_behalf_of"):
        if p.get(key) is not None:
            payload[key] = p[key]
    if sub["step_up"] and isinstance(p.get("step_up"), dict):
        payload["step_up"] = p["step_up"]  # the claim, for the audit trail
    d.emit(E.ApprovalGranted if decision == "approve" else E.ApprovalRejected, payload)
    _settle(d, flow, step, approval_id)


def _settle(d: Decision, flow: Flow, step: ApprovalStep, approval_id: str) -> None:
    sub = flow.sub
    approved, rejected = _approved(sub), _rejected(sub)
    if len(approved) >= sub["need"]:
        _finish(d, flow, step, approval_id, "approved")
        return
    if not rejected:
        return
    all_needed = sub["quorum"] in (Quorum.SERIAL.value, Quorum.PARALLEL.value)
    out_of_reach = not sub["roles"] and len(sub["assignees"]) - len(rejected) < sub["need"]
    if sub["veto"] or all_needed or out_of_reach:
        _finish(d, flow, step, approval_id, "rejected")


def _finish(d: Decision, flow: Flow, step: ApprovalStep, approval_id: str, outcome: str) -> None:
    sub = flow.sub
    decisions = [{k: v for k, v in x.items() if k != "command"} for x in sub["decisions"]]
    d.emit(
        E.ApprovalCompleted,
        {
            "approval_id": approval_id,
            "flow": flow.id,
            "step": step.name,
            "outcome": outcome,
            "approved": _approved(sub),
            "rejected": _rejected(sub),
        },
    )
    result = {"outcome": outcome, "decisions": decisions}
    if outcome == "approved":
        flows.complete_step(d, flow, step, result, step.into)
    elif step.on_reject is not None:
        flows.complete_step(d, flow, step, result, step.into, next_=step.on_reject)
    else:
        raise StepError(
            APPROVAL_REJECTED,
            f"approval {step.name!r} was rejected by {', '.join(_rejected(sub))}",
            {"decisions": decisions},
        )


def delegated(d: Decision, flow: Flow, step: ApprovalStep, approval_id: str) -> None:
    p = d.command.payload
    sub = flow.sub
    user, to = p.get("user"), p.get("to")
    roles = p.get("roles") or []
    reason = None
    if not sub["delegation"]:
        reason = f"approval {step.name!r} does not allow delegation"
    elif not isinstance(user, str) or not isinstance(to, str) or not user or not to:
        reason = "a delegation names the user ('user') and the delegate ('to')"
    elif any(x["user"] == user for x in sub["decisions"]):
        reason = f"{user} has already decided"
    elif to in sub["assignees"]:
        reason = f"{to} is already an approver"
    elif any(x["user"] == to for x in sub["decisions"]):
        reason = f"{to} has already decided (nobody counts twice)"
    else:
        reason = _eligible(sub, user, roles if isinstance(roles, list) else [])
    if reason is not None:
        _refuse(d, flow, step, user, reason)
        return
    payload = {
        "approval_id": approval_id,
        "flow": flow.id,
        "step": step.name,
        "from": user,
        "to": to,
    }
    why = p.get("reason", p.get("comment"))
    if isinstance(why, str) and why:
        payload["reason"] = why
    d.emit(E.ApprovalDelegated, payload)


def expired(d: Decision, flow: Flow, step: ApprovalStep) -> None:
    approval_id = flow.sub["approval"]
    base = {"approval_id": approval_id, "flow": flow.id, "step": step.name}
    if step.escalate_to_role is not None and not flow.sub.get("escalated"):
        d.emit(
            E.ApprovalEscalated,
            {**base, "role": step.escalate_to_role, "expires": _expires(d, step)},
        )
        _arm_expiry(d, flow, step)
        return
    d.emit(E.ApprovalExpired, base)
    if step.escalation is not None:
        flows.complete_step(d, flow, step, next_=step.escalation)
        return
    raise StepError(
        APPROVAL_EXPIRED,
        f"approval {step.name!r} expired undecided — add `escalation` or a catch",
    )


def remind(d: Decision, flow: Flow, step: ApprovalStep) -> None:
    sub = flow.sub
    decided_users = {x["user"] for x in sub["decisions"]}
    count = sub.get("reminders", 0) + 1
    d.emit(
        E.ApprovalReminderSent,
        {
            "approval_id": sub["approval"],
            "flow": flow.id,
            "step": step.name,
            "count": count,
            "to": [u for u in sub["assignees"] if u not in decided_users],
            "roles": list(sub["roles"]),
            "expires": sub.get("expires"),
        },
    )
    r = step.reminders
    if r is not None and (r.max is None or count < r.max):
        _arm_reminder(d, flow, step)
