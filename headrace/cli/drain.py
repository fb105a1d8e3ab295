"""``headrace drain``, ``headrace drain status`` and ``headrace undrain``.

``drain --type T`` (or ``--tenant T``) writes a drain record to the compacted
``control`` topic: the ingress router and the orchestrator refuse new runs of
that type or tenant from then on, in-flight runs finish. ``drain status`` lists
every drain with what is left of it — runs still running, suspended or
compensating, counted by the query API — and says ``drained`` at zero.
``undrain`` lifts it (a tombstone).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from headrace.cli.common import Format, err, fail, usage
from headrace.cli.control import default_actor
from headrace.drain import Drain, DrainBook, lift_drain, new_drain, put_drain
from headrace.errors import HeadraceError
from headrace.services.api.client import ApiClient
from headrace.settings import Settings

app = typer.Typer(
    help="Refuse new runs of a workflow type or tenant while in-flight runs finish.",
    invoke_without_command=True,
)
out = Console(highlight=False, soft_wrap=True)


def _target(wtype: str | None, tenant: str | None, verb: str) -> tuple[str, str]:
    if (wtype is None) == (tenant is None):
        raise usage(f"{verb} needs exactly one of --type T or --tenant T")
    return ("type", wtype) if wtype is not None else ("tenant", tenant)  # type: ignore[return-value]


TypeOpt = Annotated[str | None, typer.Option("--type", help="a workflow type")]
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="a tenant")]


@app.callback()
def drain(
    ctx: typer.Context,
    wtype: TypeOpt = None,
    tenant: TenantOpt = None,
    reason: Annotated[
        str | None, typer.Option("--reason", "-r", help="why (kept on the drain record)")
    ] = None,
    actor: Annotated[str | None, typer.Option("--as", help="who (default: the OS user)")] = None,
) -> None:
    """Drain a workflow type or a tenant: `headrace drain --type T [--reason R]`."""
    if ctx.invoked_subcommand is not None:
        if wtype is not None or tenant is not None:
            raise usage(f"`drain {ctx.invoked_subcommand}` takes no --type/--tenant")
        return
    kind, name = _target(wtype, tenant, "drain")
    d = new_drain(kind, name, reason, actor or default_actor())
    try:
        put_drain(Settings(), d)
    except HeadraceError as exc:
        raise fail(exc) from None
    what = "workflow type" if kind == "type" else "tenant"
    out.print(
        f"draining {what} {name}: new runs are refused, in-flight runs finish "
        f"(`headrace drain status` shows what is left; `headrace undrain {d.flag}` lifts it)"
    )


def _left(api: ApiClient, d: Drain) -> dict[str, Any]:
    stats = api.run_stats(**{d.kind: d.name}, fresh=True)
    counts = stats["counts"]
    return {
        "running": counts.get("running", 0),
        "suspended": counts.get("suspended", 0),
        "compensating": counts.get("compensating", 0),
        "left": stats["active"],
    }


@app.command("status")
def status(
    fmt: Annotated[Format, typer.Option("--format", help="a table or JSON")] = Format.TABLE,
) -> None:
    """Every drain in force and how many of its runs are still in flight."""
    settings = Settings()
    try:
        with DrainBook(settings, name="drain-status") as book:
            drains = book.all()
    except HeadraceError as exc:
        raise fail(exc) from None
    rows: list[dict[str, Any]] = []
    problem: HeadraceError | None = None
    with ApiClient() as api:
        for d in drains:
            row: dict[str, Any] = {**d.to_json()}
            try:
                row.update(_left(api, d))
                row["state"] = "drained" if row["left"] == 0 else "draining"
            except HeadraceError as exc:
                problem = exc
                row["state"] = "unknown"
            rows.append(row)
    if fmt is Format.JSON:
        typer.echo(json.dumps(rows, indent=2))
    elif not rows:
        out.print("no drains")
    else:
        table = Table(
            "drain",
            "state",
            "running",
            "suspended",
            "compensating",
            "since",
            "by",
            "reason",
            box=None,
            pad_edge=False,
        )
        for r in rows:
            since = datetime.fromtimestamp(r["since"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            colour = {"drained": "green", "draining": "yellow"}.get(r["state"], "red")
            table.add_row(
                f"{r['kind']} {r['name']}",
                f"[{colour}]{r['state']}[/]",
                *(str(r.get(k, "?")) for k in ("running", "suspended", "compensating")),
                since,
                r.get("actor") or "-",
                r.get("reason") or "-",
            )
        out.print(table)
    if problem is not None:
        err.print(f"[yellow]warning[/] counts unknown: {problem.message}", markup=True)
        raise typer.Exit(1)


def undrain(
    wtype: TypeOpt = None,
    tenant: TenantOpt = None,
) -> None:
    """Lift a drain: new runs of the type or tenant are accepted again."""
    kind, name = _target(wtype, tenant, "undrain")
    try:
        put = Settings()
        lift_drain(put, kind, name)
    except HeadraceError as exc:
        raise fail(exc) from None
    what = "workflow type" if kind == "type" else "tenant"
    out.print(f"{what} {name} accepts new runs again")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="drain")
    root.command("undrain")(undrain)
