"""``headrace suspend|resume|cancel|terminate``: control operations, on one run or in bulk.

One run: ``headrace suspend RUN [--tenant T] --reason TEXT [--as USER]`` writes
the command to ``commands`` (see :mod:`headrace.control`); when the query API
answers, the run is looked up first so that a mistyped id or an ended run is
reported instead of silently ignored.

In bulk: ``--type``/``--tenant`` (and ``--status``, by default the statuses the
operation applies to) select runs through the query API; ``--dry-run`` lists
them, otherwise every one gets its command under a progress bar and a final
count. ``--wait`` then follows the views until each targeted run shows the
new state (exit 124 when ``--timeout`` passes first).
"""

from __future__ import annotations

import getpass
import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from headrace import control
from headrace.cli.common import Format, err, fail, usage
from headrace.control import Op
from headrace.core.durations import parse_duration
from headrace.core.views import TERMINAL
from headrace.errors import ErrorCode, HeadraceError
from headrace.services.api.client import ApiClient
from headrace.settings import Settings
from headrace.streams.cloudevents_in import DEFAULT_TENANT

EXIT_TIMEOUT = 124
out = Console(highlight=False, soft_wrap=True)


def default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (containers)
        return "cli"


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


def _one(
    api: ApiClient,
    op: Op,
    run_id: str,
    tenant: str,
    reason: str,
    actor: str,
    wait: bool,
    timeout: float,
) -> None:
    settings = Settings()
    try:
        view: dict[str, Any] | None = api.run(tenant, run_id, fresh=True)
    except HeadraceError as exc:
        if exc.code is not ErrorCode.API_UNAVAILABLE:
            raise fail(exc) from None
        if wait:
            raise fail(exc) from None
        err.print(f"[yellow]warning[/] {exc.message}; sending without checking", markup=True)
        view = None
    if view is not None and view["status"] in TERMINAL:
        raise fail(
            HeadraceError(
                ErrorCode.COMMAND_REJECTED,
                f"run {tenant}/{run_id} already ended ({view['status']}); nothing to {op.value}",
            )
        )
    command = control.control_command(
        op, tenant, run_id, actor=actor, reason=reason, invocation=control.invocation_id()
    )
    try:
        control.send(settings, [command])
    except HeadraceError as exc:
        raise fail(exc) from None
    out.print(f"{op.value} sent to {tenant}/{run_id} (command {command.command_id})")
    if wait:
        done = api.wait_run(tenant, run_id, lambda v: control.reached(op, v), timeout=timeout)
        if done is None:
            err.print(f"[yellow]timeout[/] {tenant}/{run_id} does not show {op.value} yet")
            raise typer.Exit(EXIT_TIMEOUT)
        out.print(f"{tenant}/{run_id} is {done['status']}")


def _bulk(
    api: ApiClient,
    op: Op,
    wtype: str | None,
    tenant: str | None,
    status: str | None,
    reason: str,
    actor: str,
    dry_run: bool,
    wait: bool,
    timeout: float,
    fmt: Format,
) -> None:
    settings = Settings()
    statuses = status or ",".join(control.DEFAULT_STATUSES[op])
    try:
        targets = list(api.runs(type=wtype, tenant=tenant, status=statuses, fresh=True))
    except HeadraceError as exc:
        raise fail(exc) from None
    what = " ".join(
        f"{k} {v}" for k, v in (("type", wtype), ("tenant", tenant), ("status", statuses)) if v
    )
    if dry_run:
        if fmt is Format.JSON:
            keys = ("tenant", "run_id", "type", "status")
            typer.echo(json.dumps([{k: r[k] for k in keys} for r in targets], indent=2))
        else:
            table = Table("tenant", "run", "type", "status", box=None, pad_edge=False)
            for r in targets:
                table.add_row(r["tenant"], r["run_id"], f"{r['type']}@{r['version']}", r["status"])
            out.print(table)
        out.print(f"dry run: {op.value} would affect {len(targets)} run(s) ({what})")
        return
    invocation = control.invocation_id()
    commands = [
        control.control_command(
            op, r["tenant"], r["run_id"], actor=actor, reason=reason, invocation=invocation
        )
        for r in targets
    ]
    with _progress() as progress:
        task = progress.add_task(f"{op.value}", total=len(commands))
        try:
            control.send(settings, commands, on_sent=lambda c: progress.advance(task))
        except HeadraceError as exc:
            raise fail(exc) from None
    out.print(f"{op.value}: sent to {len(commands)} run(s) ({what}), invocation {invocation}")
    if wait and targets:
        _wait_all(api, op, targets, timeout)


def _wait_all(api: ApiClient, op: Op, targets: list[dict[str, Any]], timeout: float) -> None:
    pending = {(r["tenant"], r["run_id"]) for r in targets}
    deadline = time.monotonic() + timeout
    with _progress() as progress:
        task = progress.add_task(f"waiting for {op.value}", total=len(pending))
        while pending:
            for tenant, run_id in sorted(pending):
                if control.reached(op, api.run(tenant, run_id)):
                    pending.discard((tenant, run_id))
                    progress.advance(task)
            if pending and time.monotonic() >= deadline:
                break
            if pending:
                time.sleep(0.2)
    if pending:
        sample = ", ".join(f"{t}/{r}" for t, r in sorted(pending)[:5])
        err.print(f"[yellow]timeout[/] {len(pending)} run(s) do not show {op.value} yet: {sample}")
        raise typer.Exit(EXIT_TIMEOUT)
    out.print(f"all {len(targets)} run(s) show {op.value}")


def _command(op: Op, help_text: str) -> Any:
    def run(
        run_id: Annotated[
            str | None, typer.Argument(metavar="[RUN]", help="the run id (or use filters)")
        ] = None,
        reason: Annotated[
            str, typer.Option("--reason", "-r", help="why (recorded in the run's history)")
        ] = "",
        tenant: Annotated[
            str | None,
            typer.Option("--tenant", "-t", help="the run's tenant (default 'default'); a filter"),
        ] = None,
        actor: Annotated[
            str | None, typer.Option("--as", help="who does it (default: the OS user)")
        ] = None,
        wtype: Annotated[str | None, typer.Option("--type", help="all runs of this type")] = None,
        status: Annotated[
            str | None, typer.Option("--status", help="bulk: only runs in these statuses")
        ] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would change")] = False,
        wait: Annotated[
            bool, typer.Option("--wait", "-w", help="wait until the views show the change")
        ] = False,
        timeout: Annotated[str, typer.Option("--timeout", help="how long --wait waits")] = "2m",
        fmt: Annotated[
            Format, typer.Option("--format", help="how --dry-run lists the runs")
        ] = Format.TABLE,
    ) -> None:
        if not reason.strip():
            raise usage(f"{op.value} needs --reason TEXT")
        try:
            wait_s = parse_duration(timeout) / 1000
        except ValueError as exc:
            raise usage(f"--timeout: {exc}") from None
        who = actor or default_actor()
        if run_id is not None:
            if wtype is not None or status is not None or dry_run:
                raise usage("give a RUN or filters (--type/--tenant/--status, --dry-run), not both")
            with ApiClient() as api:
                _one(api, op, run_id, tenant or DEFAULT_TENANT, reason, who, wait, wait_s)
            return
        if wtype is None and tenant is None:
            raise usage(f"{op.value} needs a RUN, or --type and/or --tenant to select runs in bulk")
        with ApiClient() as api:
            _bulk(api, op, wtype, tenant, status, reason, who, dry_run, wait, wait_s, fmt)

    run.__doc__ = help_text
    return run


HELP = {
    Op.SUSPEND: "Hold runs: in-flight results are recorded, nothing new starts until resume.",
    Op.RESUME: "Continue suspended runs: held steps start, due retries go out.",
    Op.CANCEL: "Cancel runs: completed steps are compensated in reverse order, then RunCancelled.",
    Op.TERMINATE: "End runs at once, without compensation (children with cascade follow).",
}


def register(app: typer.Typer) -> None:
    for op in Op:
        app.command(op.value)(_command(op, HELP[op]))
