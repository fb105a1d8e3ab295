"""``headrace approve|reject``, ``approvals ...`` and ``sla report``: usage errors, unreachable
API, step-up claims and the commands they build (no broker needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from headrace import approvals
from headrace.cli.main import app
from headrace.core.envelope import CommandType
from headrace.errors import ErrorCode, HeadraceError

NOWHERE = {"HEADRACE_API_URL": "http://127.0.0.1:9", "COLUMNS": "200"}


def run(*args: str, **env: str) -> Any:
    return CliRunner().invoke(app, list(args), env={**NOWHERE, **env})


def test_a_decision_needs_a_reason_and_a_well_formed_id() -> None:
    no_reason = run("approve", "loan-1:7", "--as", "ann")
    assert no_reason.exit_code == 2 and "needs --reason" in no_reason.output
    bad_id = run("reject", "loan-1", "--as", "ann", "--reason", "no")
    assert bad_id.exit_code == 1 and "HR-APR-001" in bad_id.output
    assert "<run_id>:<seq>" in bad_id.output
    no_to = run("approvals", "delegate", "loan-1:7", "--as", "ann", "--reason", "away")
    assert no_to.exit_code == 2 and "--to USER" in no_to.output


def test_without_the_api_reads_fail_clearly_and_decisions_say_how_to_go_on() -> None:
    listed = run("approvals", "list", "--assignee", "ann")
    assert listed.exit_code == 1 and "HR-API-001" in listed.output
    assert "headrace serve api" in listed.output
    decided = run("approve", "loan-1:7", "--as", "ann", "--reason", "fine")
    assert decided.exit_code == 1 and "--no-wait" in decided.output
    report = run("sla", "report")
    assert report.exit_code == 1 and "HR-API-001" in report.output


def test_step_up_flags_need_the_hook_for_tokens_and_refuse_self_assertion_with_one() -> None:
    token = run("approve", "loan-1:7", "--as", "ann", "--reason", "ok", "--step-up-token", "x")
    assert token.exit_code == 1 and "HR-APR-004" in token.output
    assert "HEADRACE_STEP_UP_HOOK" in token.output
    hooked = run(
        "approve",
        "loan-1:7",
        "--as",
        "ann",
        "--reason",
        "ok",
        "--step-up",
        "otp",
        HEADRACE_STEP_UP_HOOK="mycorp.idp:verify",
    )
    assert hooked.exit_code == 1 and "--step-up-token" in hooked.output


HOOK = """
def verify(token, user):
    if token != "good-" + user:
        raise ValueError("token does not verify")
    return {"method": "webauthn", "at": 1_767_225_600_000, "issuer": "idp.example"}


def broken(token, user):
    return {"method": "otp"}
"""


def test_the_hook_turns_a_token_into_a_claim_or_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "idp_hook_for_tests.py").write_text(HOOK)
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = approvals.ApprovalSettings(step_up_hook="idp_hook_for_tests:verify")
    claim = approvals.step_up_claim(user="ann", method=None, token="good-ann", settings=settings)
    assert claim == {"method": "webauthn", "at": 1_767_225_600_000, "issuer": "idp.example"}
    for token, spec, words in (
        ("bad", "idp_hook_for_tests:verify", "refused the token for ann: token does not verify"),
        ("good-ann", "idp_hook_for_tests:broken", "it must return"),
        ("good-ann", "idp_hook_for_tests:missing", "cannot load"),
        ("good-ann", "no-colon", "not module:function"),
    ):
        with pytest.raises(HeadraceError) as err:
            approvals.step_up_claim(
                user="ann",
                method=None,
                token=token,
                settings=approvals.ApprovalSettings(step_up_hook=spec),
            )
        assert err.value.code is ErrorCode.STEP_UP_FAILED and words in err.value.message
    asserted = approvals.step_up_claim(
        user="ann", method="otp", token=None, at_ms=5, settings=approvals.ApprovalSettings()
    )
    assert asserted == {"method": "otp", "at": 5, "issuer": "self-asserted"}
    assert approvals.step_up_claim(user="ann", method=None, token=None) is None


def test_commands_address_the_run_the_approval_id_names() -> None:
    decide = approvals.decision_command(
        tenant="acme",
        approval_id="loan:17:42",
        user="ann",
        decision="reject",
        reason="income unverified",
        invocation="inv1",
        roles=["risk"],
        step_up={"method": "otp", "at": 1},
        data={"rate": 4.5},
        now_ms=99,
    )
    assert (decide.tenant, decide.run_id, decide.type, decide.time) == (
        "acme",
        "loan:17",
        CommandType.DecideApproval,
        99,
    )
    assert decide.command_id == "apv:reject:inv1:acme/loan:17:42"
    assert decide.payload == {
        "approval_id": "loan:17:42",
        "user": "ann",
        "decision": "reject",
        "comment": "income unverified",
        "roles": ["risk"],
        "step_up": {"method": "otp", "at": 1},
        "data": {"rate": 4.5},
    }
    hand = approvals.delegation_command(
        tenant="acme", approval_id="r1:5", user="ann", to="dan", reason="leave", invocation="i"
    )
    assert hand.type is CommandType.DelegateApproval and hand.run_id == "r1"
    assert hand.payload == {"approval_id": "r1:5", "user": "ann", "to": "dan", "reason": "leave"}
    with pytest.raises(ValueError):
        approvals.decision_command(
            tenant="a", approval_id="r:1", user="u", decision="maybe", reason="?", invocation="i"
        )
