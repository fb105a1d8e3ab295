"""``headrace runs``: list runs from the query API, as a table or JSON."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from headrace.cli.common import Format, fail
from headrace.errors import HeadraceError
from headrace.history import iso_time
from headrace.services.api.client import ApiClient

out = Console(highlight=False, soft_wrap=True)

COLOURS = {
    "running": "cyan",
    "suspended": "yellow",
    "compensating": "magenta",
    "completed": "green",
    "failed": "red",
    "cancelled": "dim",
    "terminated": "red",
}


def ago(ms: int | None, now_ms: int) -> str:
    """``3s``, ``5m``, ``2h``, ``4d`` ago (or ``-``)."""
    if ms is None:
        return "-"
    s = max(0, (now_ms - ms) // 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def runs_cmd(
    wtype: Annotated[str | None, typer.Option("--type", help="workflow type")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="only this tenant")] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", "-s", help="e.g. running,suspended; active; terminal"),
    ] = None,
    filter_: Annotated[
        str | None, typer.Option("--filter", help="jq over the run data; truthy keeps a run")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="most runs to show")] = 50,
    fmt: Annotated[
        Format, typer.Option("--format", help="a table, or JSON rows (the API's run rows)")
    ] = Format.TABLE,
    fresh: Annotated[
        bool, typer.Option("--fresh/--no-fresh", help="wait until the views are current")
    ] = True,
) -> None:
    """List runs (newest state from the query API at HEADRACE_API_URL)."""
    try:
        with ApiClient() as api:
            rows = list(
                api.runs(
                    limit=limit,
                    type=wtype,
                    tenant=tenant,
                    status=status,
                    filter=filter_,
                    fresh=fresh or None,
                )
            )
    except HeadraceError as exc:
        raise fail(exc) from None
    if fmt is Format.JSON:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    _table(rows)


def _table(rows: list[dict[str, Any]]) -> None:
    now = int(time.time() * 1000)
    table = Table(box=None, pad_edge=False)
    for name in ("tenant", "run", "type", "status", "started", "updated", "at"):
        table.add_column(name, no_wrap=name != "at", overflow="ellipsis")
    for r in rows:
        colour = COLOURS.get(r["status"], "white")
        where = ", ".join(r["active_steps"])
        if r.get("error"):
            where = f"{r['error'].get('code')}: {r['error'].get('message')}"
        table.add_row(
            r["tenant"],
            r["run_id"],
            f"{r['type']}@{r['version']}",
            f"[{colour}]{r['status']}[/]",
            iso_time(r["started_at"]),
            ago(r["updated_at"], now),
            where,
        )
    out.print(table)
    out.print(f"[dim]{len(rows)} run(s)[/]", markup=True)


def register(app: typer.Typer) -> None:
    app.command("runs")(runs_cmd)
