"""Step-up authentication on approval decisions: is the second factor fresh enough?

A step with ``step_up`` (``true``, or ``{max_age, methods}``) accepts a decision
only if its command carries a **step-up claim** — what an identity provider
says about the second factor the decider used:

``{"method": "otp", "at": 1767225600000, "issuer"?: "...", "subject"?: "..."}``

``method`` names the factor (OIDC ``amr`` values such as ``otp``, ``hwk``,
``webauthn``), ``at`` is when it was given (epoch ms; OIDC ``auth_time`` times 1000).
The claim is *fresh* when ``at`` lies at most ``max_age`` (default 5 minutes)
before the command's time and not more than :data:`CLOCK_SKEW_MS` after it.
Whoever sends the command vouches for the claim, as it vouches for the user and
roles (docs/approvals.md, "Step-up").

The policy travels on ``ApprovalRequested`` as ``step_up: false`` or
``{max_age_ms, methods}`` (``true`` on events from before policies had fields
means the defaults).
"""

from __future__ import annotations

from typing import Any

from headrace.core.dsl.model import StepUp
from headrace.core.durations import parse_duration

DEFAULT_MAX_AGE_MS = 5 * 60_000
CLOCK_SKEW_MS = 60_000


def policy(spec: bool | StepUp) -> dict[str, Any] | bool:
    """The step's ``step_up`` as it goes on the ``ApprovalRequested`` event."""
    if spec is False:
        return False
    if spec is True:
        return {"max_age_ms": DEFAULT_MAX_AGE_MS, "methods": []}
    assert isinstance(spec, StepUp)
    return {"max_age_ms": parse_duration(spec.max_age), "methods": list(spec.methods)}


def refusal(rule: Any, claim: Any, now: int) -> str | None:
    """Why a decision with ``claim`` at ``now`` does not satisfy ``rule`` (None if it does)."""
    if not rule:
        return None
    rule = rule if isinstance(rule, dict) else {}
    max_age = int(rule.get("max_age_ms") or DEFAULT_MAX_AGE_MS)
    methods = rule.get("methods") or []
    if not isinstance(claim, dict):
        return (
            "this approval needs a fresh second factor (step-up): the decision carries no "
            "step-up claim {method, at}"
        )
    method, at = claim.get("method"), claim.get("at")
    if not isinstance(method, str) or not method:
        return "the step-up claim names no method"
    if methods and method not in methods:
        return f"step-up by {method!r} is not accepted here (accepted: {', '.join(methods)})"
    if not isinstance(at, int) or isinstance(at, bool):
        return "the step-up claim has no time ('at', epoch ms)"
    if at - now > CLOCK_SKEW_MS:
        return f"the second factor's time lies {(at - now) // 1000} s after the decision"
    if now - at > max_age:
        return (
            f"the second factor is {(now - at) // 1000} s old; this approval accepts at most "
            f"{max_age // 1000} s — authenticate again"
        )
    return None
