"""The approval record: one JSON document per approval request, folded from run events.

What ``/approvals`` serves and ``headrace approvals list`` shows: who may
decide (assignees after delegations, roles after escalations), the quorum,
every decision so far, and whether the request is still open. Records are
keyed by ``(tenant, approval_id)``; the id is the effect id of the
``ApprovalRequested`` event (``<run_id>:<seq>``).

Which events touch which record: the approval events name ``approval_id``;
a ``TimerArmed`` for an approval's expiry names only the flow, and the end
of a run (``RunCompleted`` ... ``RunTerminated``) closes every approval still
open — :func:`approval_refs` resolves both through the run view, so call it
*before* folding the event into the run view.

Schema (every key always present):

===================  ===============================================================
``approval_id``      the id decisions address
``tenant``           tenant of the run
``run_id``           the run that asked
``type``             workflow type of the run
``version``          its version
``step``             the approval step
``flow``             the flow it runs in (``""`` is the main flow)
``assignees``        users who may decide now (delegations applied)
``roles``            roles whose members may decide (escalations applied)
``quorum``           ``serial`` | ``parallel`` | ``threshold``
``need``             approvals needed
``veto``             one rejection rejects
``delegation``       assignees may hand over
``step_up``          ``false``, or the step-up rule ``{max_age_ms, methods}`` decisions
                     must meet (a fresh second factor)
``form``             JSON Schema of decision data, or null
``decisions``        ``[{decision: granted | rejected | refused | delegated, user,
                     reason, at, seq, to?, on_behalf_of?, data?, step_up?}]`` in order
                     (``step_up``: the claim a decision carried)
``status``           ``pending`` | ``approved`` | ``rejected`` | ``expired`` |
                     ``cancelled``
``requested_at``     epoch ms of the request
``updated_at``       epoch ms of the last change
``ended_at``         when it stopped being pending, else null
``expires``          ``{due, business}`` of the armed expiry (``due`` null for business
                     time the timer service resolves), else null
``escalated``        the expiry moved it to ``escalate_to_role``
``reminders``        reminders sent
``last_seq``         seq of the last run event folded into it
===================  ===============================================================
"""

from __future__ import annotations

from typing import Any

from headrace.core.decider.data import canon
from headrace.core.envelope import Event, EventType

E = EventType

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
EXPIRED = "expired"
CANCELLED = "cancelled"
APPROVAL_STATUSES = (PENDING, APPROVED, REJECTED, EXPIRED, CANCELLED)

_RUN_ENDS = frozenset(
    {E.RunCompleted, E.RunFailed, E.RunCancelled, E.RunTerminated, E.RunContinuedAsNew}
)
_APPROVAL_EVENTS = frozenset(
    {
        E.ApprovalRequested,
        E.ApprovalGranted,
        E.ApprovalRejected,
        E.ApprovalDecisionRefused,
        E.ApprovalDelegated,
        E.ApprovalReminderSent,
        E.ApprovalExpired,
        E.ApprovalEscalated,
        E.ApprovalCompleted,
        E.ApprovalCancelled,
    }
)


def approval_refs(run: dict[str, Any] | None, event: Event) -> list[str]:
    """The approval ids ``event`` changes, given the run view before the event."""
    p = event.payload
    if event.type in _APPROVAL_EVENTS:
        aid = p.get("approval_id")
        return [aid] if isinstance(aid, str) else []
    if run is None:
        return []
    if event.type is E.TimerArmed and p.get("purpose") == "expiry":
        aid = run["approvals"].get(p.get("flow"))
        return [aid] if aid is not None else []
    if event.type in _RUN_ENDS or event.type is E.CompensationStarted:
        return sorted(run["approvals"].values())
    return []


def fold_approval(record: dict[str, Any] | None, event: Event) -> dict[str, Any] | None:
    """The record after ``event`` (a new dict when ``record`` is None and the event
    opens it); ``record`` itself, unchanged, if the event is already reflected."""
    if event.type is E.ApprovalRequested:
        if record is not None:
            return record
        return _requested(event)
    if record is None or event.seq <= record["last_seq"]:
        return record
    out = dict(record)
    out["decisions"] = list(record["decisions"])
    handler = _HANDLERS.get(event.type)
    if handler is not None:
        handler(out, event.payload, event)
    elif event.type in _RUN_ENDS or event.type is E.CompensationStarted:
        _close(out, CANCELLED, event)
    out["last_seq"] = event.seq
    if event.time > out["updated_at"]:
        out["updated_at"] = event.time
    return out


def _requested(ev: Event) -> dict[str, Any]:
    p = ev.payload
    return {
        "approval_id": p["approval_id"],
        "tenant": ev.tenant,
        "run_id": ev.run_id,
        "type": ev.workflow_type,
        "version": ev.workflow_version,
        "step": p.get("step"),
        "flow": p.get("flow"),
        "assignees": list(p.get("assignees") or []),
        "roles": list(p.get("roles") or []),
        "quorum": p.get("quorum"),
        "need": p.get("need"),
        "veto": bool(p.get("veto")),
        "delegation": bool(p.get("delegation")),
        "step_up": canon(p.get("step_up")) or False,
        "form": canon(p.get("form")),
        "decisions": [],
        "status": PENDING,
        "requested_at": ev.time,
        "updated_at": ev.time,
        "ended_at": None,
        "expires": canon(p.get("expires")),
        "escalated": False,
        "reminders": 0,
        "last_seq": ev.seq,
    }


def _close(r: dict[str, Any], status: str, ev: Event) -> None:
    if r["status"] == PENDING:
        r["status"] = status
        r["ended_at"] = ev.time
        r["expires"] = None


def _decided(r: dict[str, Any], p: dict[str, Any], ev: Event) -> None:
    kind = {
        E.ApprovalGranted: "granted",
        E.ApprovalRejected: "rejected",
        E.ApprovalDecisionRefused: "refused",
    }[ev.type]
    entry: dict[str, Any] = {
        "decision": kind,
        "user": p.get("user"),
        # a decision's reason travels as `comment` (or `reason`); a refusal's is why
        "reason": p.get("reason") if kind == "refused" else p.get("comment", p.get("reason")),
        "at": ev.time,
        "seq": ev.seq,
    }
    for key in ("on_behalf_of", "data", "step_up"):
        if p.get(key) is not None:
            entry[key] = canon(p[key])
    r["decisions"].append(entry)


def _delegated(r: dict[str, Any], p: dict[str, Any], ev: Event) -> None:
    src, to = p.get("from"), p.get("to")
    entry = {"decision": "delegated", "user": src, "to": to, "reason": p.get("reason")}
    r["decisions"].append({**entry, "at": ev.time, "seq": ev.seq})
    assignees = list(r["assignees"])
    if src in assignees:
        assignees[assignees.index(src)] = to
    elif to not in assignees:
        assignees.append(to)
    r["assignees"] = assignees


def _reminded(r: dict[str, Any], p: dict[str, Any], ev: Event) -> None:
    r["reminders"] = p.get("count", r["reminders"] + 1)


def _escalated(r: dict[str, Any], p: dict[str, Any], ev: Event) -> None:
    r["escalated"] = True
    role = p.get("role")
    if role and role not in r["roles"]:
        r["roles"] = [*r["roles"], role]


def _expiry_armed(r: dict[str, Any], p: dict[str, Any], ev: Event) -> None:
    if r["status"] == PENDING:
        r["expires"] = {"due": p.get("due"), "business": canon(p.get("business"))}


def _completed(r: dict[str, Any], p: dict[str, Any], ev: Event) -> None:
    _close(r, APPROVED if p.get("outcome") == "approved" else REJECTED, ev)


_HANDLERS = {
    E.ApprovalGranted: _decided,
    E.ApprovalRejected: _decided,
    E.ApprovalDecisionRefused: _decided,
    E.ApprovalDelegated: _delegated,
    E.ApprovalReminderSent: _reminded,
    E.ApprovalEscalated: _escalated,
    E.TimerArmed: _expiry_armed,
    E.ApprovalCompleted: _completed,
    E.ApprovalExpired: lambda r, p, ev: _close(r, EXPIRED, ev),
    E.ApprovalCancelled: lambda r, p, ev: _close(r, CANCELLED, ev),
}


def may_decide(record: dict[str, Any], user: str | None, roles: list[str]) -> bool:
    """Whether ``user`` (with ``roles``) is among who may decide the record now.

    The query side's answer for inbox lists (``?assignee=``/``?role=``): for a
    ``serial`` quorum only the assignee whose turn it is; users who decided
    already are left out. The decider has the last word when the decision arrives.
    """
    decided = {d["user"] for d in record["decisions"] if d["decision"] in ("granted", "rejected")}
    if user is not None and user in decided:
        return False
    if record["quorum"] == "serial":
        granted = sum(1 for d in record["decisions"] if d["decision"] == "granted")
        turn = record["assignees"][granted] if granted < len(record["assignees"]) else None
        return user is not None and user == turn
    if user is not None and user in record["assignees"]:
        return True
    return any(r in record["roles"] for r in roles)
