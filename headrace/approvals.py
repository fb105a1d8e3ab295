"""Deciding approvals from outside the engine: the commands, finding the run, step-up claims.

One code path for every caller (the CLI now, the API later): a decision is a
``DecideApproval`` command and a delegation a ``DelegateApproval`` command to
the run that asked, written to ``commands`` (:func:`headrace.control.send`).
The engine checks who may decide and records what it refuses
(``ApprovalDecisionRefused``); the caller vouches for the user, the roles and
the step-up claim it puts on the command.

**Finding the run.** An approval id is ``<run_id>:<seq>`` (the effect id of its
``ApprovalRequested`` event), so it names its run; the tenant comes from the
query API's approval record (or ``--tenant`` when the API cannot be asked).

**Step-up hook.** Steps with ``step_up`` accept a decision only with a fresh
claim ``{method, at}`` (:mod:`headrace.core.decider.step_up`). With
``HEADRACE_STEP_UP_HOOK=package.module:function`` set, the claim comes from
that function — ``hook(token: str, user: str) -> {"method", "at", ...}`` —
which verifies a token (an OIDC ID token, a TOTP code, a WebAuthn assertion)
against the identity provider and raises (any exception) when it is not valid;
self-asserted claims are then refused. Without a hook, trusted operator tooling
may assert a claim itself (``--step-up METHOD``).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from headrace.core.envelope import Command, CommandType
from headrace.errors import ErrorCode, HeadraceError

DECISIONS = ("approve", "reject")

StepUpHook = Callable[[str, str], dict[str, Any]]


class ApprovalSettings(BaseSettings):
    """``HEADRACE_STEP_UP_HOOK``: where step-up claims come from."""

    model_config = SettingsConfigDict(env_prefix="HEADRACE_", extra="ignore")

    step_up_hook: str | None = Field(
        None, description="module:function turning a step-up token into a claim {method, at}"
    )


def run_of(approval_id: str) -> str:
    """The run an approval id belongs to (``<run_id>:<seq>``)."""
    run_id, sep, seq = approval_id.rpartition(":")
    if not sep or not run_id or not seq.isdigit():
        raise HeadraceError(
            ErrorCode.APPROVAL_NOT_FOUND,
            f"{approval_id!r} is not an approval id (they look like <run_id>:<seq>, e.g. "
            "loan-17:42) — `headrace approvals list` shows them",
        )
    return run_id


def _now(now_ms: int | None) -> int:
    return int(time.time() * 1000) if now_ms is None else now_ms


def decision_command(
    *,
    tenant: str,
    approval_id: str,
    user: str,
    decision: str,
    reason: str,
    invocation: str,
    roles: list[str] | None = None,
    step_up: dict[str, Any] | None = None,
    data: Any = None,
    now_ms: int | None = None,
) -> Command:
    """The ``DecideApproval`` command of ``user``'s ``decision`` (approve or reject)."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, not {decision!r}")
    payload: dict[str, Any] = {
        "approval_id": approval_id,
        "user": user,
        "decision": decision,
        "comment": reason,
    }
    if roles:
        payload["roles"] = list(roles)
    if step_up is not None:
        payload["step_up"] = step_up
    if data is not None:
        payload["data"] = data
    return Command(
        command_id=f"apv:{decision}:{invocation}:{tenant}/{approval_id}",
        tenant=tenant,
        run_id=run_of(approval_id),
        type=CommandType.DecideApproval,
        time=_now(now_ms),
        payload=payload,
    )


def delegation_command(
    *,
    tenant: str,
    approval_id: str,
    user: str,
    to: str,
    reason: str,
    invocation: str,
    roles: list[str] | None = None,
    now_ms: int | None = None,
) -> Command:
    """The ``DelegateApproval`` command handing ``user``'s seat to ``to``."""
    payload: dict[str, Any] = {"approval_id": approval_id, "user": user, "to": to, "reason": reason}
    if roles:
        payload["roles"] = list(roles)
    return Command(
        command_id=f"apv:delegate:{invocation}:{tenant}/{approval_id}",
        tenant=tenant,
        run_id=run_of(approval_id),
        type=CommandType.DelegateApproval,
        time=_now(now_ms),
        payload=payload,
    )


# -- step-up claims ------------------------------------------------------------------------


def asserted_claim(method: str, at_ms: int | None = None) -> dict[str, Any]:
    """A claim the caller asserts itself: "``method`` was used at ``at_ms`` (now)"."""
    return {"method": method, "at": _now(at_ms), "issuer": "self-asserted"}


def load_hook(spec: str) -> StepUpHook:
    """``package.module:function`` → the function (``STEP_UP_FAILED`` if it is not there)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise HeadraceError(
            ErrorCode.STEP_UP_FAILED,
            f"HEADRACE_STEP_UP_HOOK={spec!r} is not module:function (e.g. mycorp.idp:verify)",
        )
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise HeadraceError(
            ErrorCode.STEP_UP_FAILED, f"cannot load the step-up hook {spec!r}: {exc}"
        ) from None
    if not callable(fn):
        raise HeadraceError(ErrorCode.STEP_UP_FAILED, f"the step-up hook {spec!r} is not callable")
    hook: StepUpHook = fn
    return hook


def hooked_claim(spec: str, token: str, user: str) -> dict[str, Any]:
    """Ask the hook for the claim behind ``token``; it must be ``{method: str, at: int}``."""
    hook = load_hook(spec)
    try:
        claim = hook(token, user)
    except Exception as exc:
        raise HeadraceError(
            ErrorCode.STEP_UP_FAILED,
            f"the step-up hook {spec} refused the token for {user}: {exc}",
        ) from None
    if (
        not isinstance(claim, dict)
        or not isinstance(claim.get("method"), str)
        or not isinstance(claim.get("at"), int)
    ):
        raise HeadraceError(
            ErrorCode.STEP_UP_FAILED,
            f"the step-up hook {spec} returned {claim!r}; it must return "
            '{"method": str, "at": epoch ms, ...}',
        )
    return claim


def step_up_claim(
    *,
    user: str,
    method: str | None,
    token: str | None,
    at_ms: int | None = None,
    settings: ApprovalSettings | None = None,
) -> dict[str, Any] | None:
    """The claim to put on a decision from what the caller gave (None: no step-up)."""
    if method is None and token is None:
        return None
    hook = (settings or ApprovalSettings()).step_up_hook
    if token is not None:
        if hook is None:
            raise HeadraceError(
                ErrorCode.STEP_UP_FAILED,
                "a step-up token needs HEADRACE_STEP_UP_HOOK (module:function) to verify it",
            )
        return hooked_claim(hook, token, user)
    if hook is not None:
        raise HeadraceError(
            ErrorCode.STEP_UP_FAILED,
            f"step-up claims come from {hook} here — give --step-up-token, not --step-up",
        )
    assert method is not None
    return asserted_claim(method, at_ms)


def decision_entry(record: dict[str, Any], user: str, after_seq: int) -> dict[str, Any] | None:
    """``user``'s decision (or delegation, or refusal) recorded after ``after_seq``."""
    for entry in record.get("decisions", []):
        if entry.get("user") == user and entry.get("seq", 0) > after_seq:
            return dict(entry)
    return None
