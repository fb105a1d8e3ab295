"""``headrace approvals list|show|delegate`` and ``headrace approve|reject``: human decisions.

Lists come from the query API (``HEADRACE_API_URL``). A decision or a
delegation is a command to the run that asked (see :mod:`headrace.approvals`):
the CLI looks the approval up first — so a mistyped id, an approval that is
already decided or one in two tenants is reported instead of sent — writes the
command to ``commands``, then waits until the views show what the engine made
of it (granted, rejected, delegated, or refused and why; exit status 1 for a
refusal, 124 when ``--timeout`` passes first).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console

from headrace import approvals, control
from headrace.cli.approvals_view import approval_table, show_record
from headrace.cli.common import err, fail, load_json, usage
from headrace.cli.control import default_actor
from headrace.core.durations import parse_duration
from headrace.errors import ErrorCode, HeadraceError
from headrace.services.api.client import ApiClient
from headrace.settings import Settings
from headrace.streams.cloudevents_in import DEFAULT_TENANT

EXIT_TIMEOUT = 124
out = Console(highlight=False, soft_wrap=True)

app = typer.Typer(
    help=(
        "Approval requests: list inboxes, show one, delegate a seat.\n\n"
        "Decide with `headrace approve ID` / `headrace reject ID` (both need --reason). "
        "IDs look like <run_id>:<seq>; `headrace approvals list --assignee YOU` shows yours."
    ),
    no_args_is_help=True,
)


# -- list / show ----------------------------------------------------------------------------


@app.command("list")
def list_cmd(
    assignee: Annotated[
        str | None, typer.Option("--assignee", "-a", help="only those this user may decide now")
    ] = None,
    role: Annotated[
        list[str] | None,
        typer.Option("--role", "-R", help="only those members of this role may decide (repeat)"),
    ] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="one tenant")] = None,
    status: Annotated[
        str,
        typer.Option(
            "--status", "-s", help="pending (default), approved, rejected, expired, cancelled, all"
        ),
    ] = "pending",
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="most to show")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON records, not a table")] = False,
) -> None:
    """List approval requests — everyone's, or an inbox with --assignee / --role.

    An inbox holds what that person may decide *now*: for a serial quorum only
    the assignee whose turn it is, and never a request they decided already.
    """
    try:
        with ApiClient() as api:
            records = list(
                api.approvals(
                    limit=limit,
                    status=status,
                    assignee=assignee,
                    role=role or None,
                    tenant=tenant,
                    fresh=True,
                )
            )
    except HeadraceError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(records, indent=2, ensure_ascii=False))
        return
    out.print(approval_table(records))
    out.print(f"[dim]{len(records)} approval request(s)[/]", markup=True)


@app.command("show")
def show_cmd(
    approval_id: Annotated[str, typer.Argument(metavar="ID", help="the approval id")],
    tenant: Annotated[
        str | None, typer.Option("--tenant", "-t", help="needed only if two tenants have the id")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the JSON record")] = False,
) -> None:
    """Show one approval request: who may decide, the quorum, every decision so far."""
    try:
        with ApiClient() as api:
            record = api.approval(approval_id, tenant, fresh=True)
    except HeadraceError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(record, indent=2, ensure_ascii=False))
        return
    show_record(out, record)


# -- deciding -----------------------------------------------------------------------------


def _resolve(
    api: ApiClient, approval_id: str, tenant: str | None, wait: bool
) -> tuple[dict[str, Any] | None, str]:
    """The approval's record (None when the API is down and we may go on) and tenant."""
    approvals.run_of(approval_id)  # a malformed id fails here, before anything else
    try:
        record: dict[str, Any] = api.approval(approval_id, tenant, fresh=True)
    except HeadraceError as exc:
        if exc.code is not ErrorCode.API_UNAVAILABLE:
            raise
        if wait:
            raise HeadraceError(
                exc.code,
                f"{exc.message}. To send without checking or waiting: --no-wait "
                "[--tenant T] (the run is the part of the id before the last ':')",
            ) from None
        err.print(
            f"[yellow]warning[/] {exc.message}; sending to tenant "
            f"{tenant or DEFAULT_TENANT!r} without checking (--no-wait)",
            markup=True,
        )
        return None, tenant or DEFAULT_TENANT
    if record["status"] != "pending":
        raise HeadraceError(
            ErrorCode.APPROVAL_CLOSED,
            f"approval {approval_id} of {record['tenant']}/{record['run_id']} is already "
            f"{record['status']}; nothing to decide",
        )
    return record, record["tenant"]


def _await(
    api: ApiClient, record: dict[str, Any], user: str, timeout: float
) -> dict[str, Any] | None:
    """Poll the record until the engine's answer to ``user`` shows (None at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        now = api.approval(record["approval_id"], record["tenant"])
        entry = approvals.decision_entry(now, user, record["last_seq"])
        if entry is not None:
            # the decision's other events (ApprovalCompleted...) were written with it
            now = api.approval(record["approval_id"], record["tenant"], fresh=True)
            return {**entry, "status": now["status"], "record": now}
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def _report(result: dict[str, Any], user: str, approval_id: str) -> None:
    kind = result["decision"]
    if kind == "refused":
        raise fail(
            HeadraceError(
                ErrorCode.APPROVAL_REFUSED,
                f"the engine refused {user}'s decision on {approval_id}: {result['reason']} "
                "(recorded as ApprovalDecisionRefused)",
            )
        )
    record = result["record"]
    granted = sum(1 for d in record["decisions"] if d["decision"] == "granted")
    if kind == "delegated":
        out.print(f"{user} handed {approval_id} to {result['to']}")
    else:
        out.print(f"{kind} by {user} ({granted} of {record['need']} approvals needed)")
    if result["status"] != "pending":
        out.print(f"approval {approval_id} is now [bold]{result['status']}[/]", markup=True)


def _submit(
    make: Any, approval_id: str, tenant: str | None, user: str, wait: bool, timeout: str
) -> None:
    """Resolve, send the command ``make(tenant)`` builds, then wait for the engine's answer."""
    try:
        wait_s = parse_duration(timeout) / 1000
    except ValueError as exc:
        raise usage(f"--timeout: {exc}") from None
    with ApiClient() as api:
        try:
            record, resolved = _resolve(api, approval_id, tenant, wait)
            command = make(resolved)
            control.send(Settings(), [command])
        except HeadraceError as exc:
            raise fail(exc) from None
        out.print(f"sent to {resolved}/{command.run_id} (command {command.command_id})")
        if not wait or record is None:
            return
        try:
            result = _await(api, record, user, wait_s)
        except HeadraceError as exc:
            raise fail(exc) from None
    if result is None:
        err.print(f"[yellow]timeout[/] the views do not show {user}'s decision yet", markup=True)
        raise typer.Exit(EXIT_TIMEOUT)
    _report(result, user, approval_id)


IdArg = Annotated[str, typer.Argument(metavar="ID", help="the approval id (<run_id>:<seq>)")]
ReasonOpt = Annotated[
    str,
    typer.Option("--reason", "-r", "-m", help="why (required; kept in the run's history)"),
]
AsOpt = Annotated[str | None, typer.Option("--as", help="who decides (default: the OS user)")]
RoleOpt = Annotated[
    list[str] | None,
    typer.Option("--role", "-R", help="a role the user holds, for role-based approvers (repeat)"),
]
TenantOpt = Annotated[
    str | None,
    typer.Option("--tenant", "-t", help="the run's tenant, if the API cannot tell (two tenants)"),
]
WaitOpt = Annotated[
    bool, typer.Option("--wait/--no-wait", help="wait for the engine's answer (needs the API)")
]
TimeoutOpt = Annotated[str, typer.Option("--timeout", help="how long --wait waits")]


def _decide(decision: str) -> Any:
    def command(
        approval_id: IdArg,
        reason: ReasonOpt = "",
        actor: AsOpt = None,
        role: RoleOpt = None,
        step_up: Annotated[
            str | None,
            typer.Option(
                "--step-up",
                metavar="METHOD",
                help="assert a second factor just given (otp, webauthn, ...) — only without "
                "HEADRACE_STEP_UP_HOOK",
            ),
        ] = None,
        step_up_token: Annotated[
            str | None,
            typer.Option(
                "--step-up-token",
                metavar="TOKEN",
                help="a token HEADRACE_STEP_UP_HOOK verifies into a step-up claim",
            ),
        ] = None,
        data: Annotated[
            str | None,
            typer.Option("--data", "-d", help="decision data for the step's form: JSON or @file"),
        ] = None,
        tenant: TenantOpt = None,
        wait: WaitOpt = True,
        timeout: TimeoutOpt = "30s",
    ) -> None:
        if not reason.strip():
            raise usage(f"{decision} needs --reason TEXT (it is kept in the run's history)")
        user = actor or default_actor()
        try:
            value = None if data is None else load_json(data, "--data")
        except HeadraceError as exc:
            raise fail(exc, 2) from None
        try:
            claim = approvals.step_up_claim(user=user, method=step_up, token=step_up_token)
        except HeadraceError as exc:
            raise fail(exc) from None
        invocation = control.invocation_id()

        def make(resolved: str) -> Any:
            return approvals.decision_command(
                tenant=resolved,
                approval_id=approval_id,
                user=user,
                decision=decision,
                reason=reason,
                invocation=invocation,
                roles=role,
                step_up=claim,
                data=value,
            )

        _submit(make, approval_id, tenant, user, wait, timeout)

    command.__doc__ = (
        f"{'Approve' if decision == 'approve' else 'Reject'} an approval request as --as USER.\n\n"
        "The engine checks that USER may decide (an assignee, a member of --role for role-based "
        "approvers, the current one for a serial quorum, not twice) and, for steps with "
        "step_up, that a fresh second factor comes with it (--step-up or --step-up-token). "
        "What it refuses is recorded as refused and this command exits 1."
    )
    return command


@app.command("delegate")
def delegate_cmd(
    approval_id: IdArg,
    to: Annotated[str, typer.Option("--to", help="the user who takes over the seat")] = "",
    reason: ReasonOpt = "",
    actor: AsOpt = None,
    role: RoleOpt = None,
    tenant: TenantOpt = None,
    wait: WaitOpt = True,
    timeout: TimeoutOpt = "30s",
) -> None:
    """Hand your seat on an approval to another user (where the step allows delegation).

    The delegate replaces you among the assignees (in your place in a serial
    order); you can no longer decide. Recorded as ApprovalDelegated with --reason.
    """
    if not to:
        raise usage("delegate needs --to USER")
    if not reason.strip():
        raise usage("delegate needs --reason TEXT (it is kept in the run's history)")
    user = actor or default_actor()
    invocation = control.invocation_id()

    def make(resolved: str) -> Any:
        return approvals.delegation_command(
            tenant=resolved,
            approval_id=approval_id,
            user=user,
            to=to,
            reason=reason,
            invocation=invocation,
            roles=role,
        )

    _submit(make, approval_id, tenant, user, wait, timeout)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="approvals")
    root.command("approve")(_decide("approve"))
    root.command("reject")(_decide("reject"))
