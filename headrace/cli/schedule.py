"""``headrace schedule``: cron schedules that start workflow runs (like Temporal Schedules)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from headrace.core.cron import next_after
from headrace.core.durations import format_duration, parse_duration
from headrace.core.localtime import to_local, zone
from headrace.errors import ErrorCode, HeadraceError
from headrace.services.timers.schedule_plan import compiled
from headrace.services.timers.schedules import (
    Overlap,
    ScheduleSpec,
    check_name,
    delete_schedule,
    get_schedule,
    new_schedule,
    publish_schedule,
    read_schedules,
    trigger_schedule,
)
from headrace.settings import Settings

app = typer.Typer(help="Cron schedules that start runs (`schedules` topic, fired by the timers).")
out = Console()


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise HeadraceError(ErrorCode.CONFIG_INVALID, f"{what} is not JSON: {exc}") from exc


@app.command("create")
def create_cmd(
    name: Annotated[str, typer.Argument(help="schedule name (letters, digits, _ . -)")],
    workflow: Annotated[str, typer.Option("--workflow", help="workflow type to start")],
    cron: Annotated[str, typer.Option("--cron", help="'min hour day month weekday' or @daily")],
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone of the cron fields")] = "UTC",
    input_json: Annotated[str, typer.Option("--input", help="run input as JSON")] = "{}",
    version: Annotated[int | None, typer.Option(help="pin a version (default: latest)")] = None,
    overlap: Annotated[
        Overlap, typer.Option(help="while the previous run still runs: skip, buffer_one, allow")
    ] = Overlap.SKIP,
    catchup: Annotated[
        str, typer.Option("--catchup-window", help="start missed firings up to this old")
    ] = "5m",
    tenant: Annotated[str, typer.Option(help="tenant of the runs")] = "default",
    note: Annotated[str, typer.Option(help="free text shown by `list`")] = "",
    update: Annotated[bool, typer.Option("--update", help="replace an existing schedule")] = False,
) -> None:
    """Create a schedule; its first firing is the first cron time after now."""
    settings = Settings()
    check_name(name)
    existing = {s.name: s for s in read_schedules(settings)}
    if name in existing and not update:
        raise HeadraceError(
            ErrorCode.CONFIG_INVALID,
            f"schedule {name!r} exists — add --update to replace it, or delete it first",
        )
    try:
        window = parse_duration(catchup)
    except ValueError as exc:
        raise HeadraceError(ErrorCode.CONFIG_INVALID, f"--catchup-window: {exc}") from exc
    spec = new_schedule(
        {
            "name": name,
            "workflow": workflow,
            "version": version,
            "cron": cron,
            "timezone": tz,
            "input": _json(input_json, "--input"),
            "tenant": tenant,
            "overlap": overlap,
            "catchup_window_ms": window,
            "note": note,
            "created_at": existing[name].created_at if name in existing else 0,
        }
    )
    stamped = publish_schedule(settings, spec)
    nxt = next_after(compiled(cron), tz, stamped.updated_at)
    when = f"{to_local(nxt, zone(tz)):%Y-%m-%d %H:%M:%S} {tz}" if nxt else "never"
    out.print(
        f"schedule [bold]{name}[/] {'updated' if name in existing else 'created'}; "
        f"next firing {when}",
        highlight=False,
    )


@app.command("list")
def list_cmd(fmt: Annotated[str, typer.Option("--format", help="text or json")] = "text") -> None:
    """Every schedule with its cron, state and next firing."""
    specs = read_schedules(Settings())
    if fmt == "json":
        out.print_json(json.dumps([s.model_dump(mode="json") for s in specs]))
        return
    table = Table(title="schedules")
    for col in ("name", "workflow", "cron", "tz", "overlap", "catch-up", "state", "next"):
        table.add_column(col)
    now = int(time.time() * 1000)
    for s in specs:
        nxt = None if s.paused else next_after(compiled(s.cron), s.timezone, now)
        table.add_row(
            s.name,
            s.workflow + (f"@{s.version}" if s.version else ""),
            s.cron,
            s.timezone,
            s.overlap.value,
            format_duration(s.catchup_window_ms),
            "paused" if s.paused else "active",
            f"{to_local(nxt, zone(s.timezone)):%Y-%m-%d %H:%M:%S}" if nxt else "-",
        )
    out.print(table)


def _flip(name: str, paused: bool) -> ScheduleSpec:
    settings = Settings()
    spec = get_schedule(settings, check_name(name))
    return publish_schedule(settings, spec.model_copy(update={"paused": paused}))


@app.command("pause")
def pause_cmd(name: str) -> None:
    """Stop firing (firings while paused are not caught up on resume)."""
    _flip(name, True)
    out.print(f"schedule [bold]{name}[/] paused", highlight=False)


@app.command("resume")
def resume_cmd(name: str) -> None:
    """Fire again from the next cron time after now."""
    _flip(name, False)
    out.print(f"schedule [bold]{name}[/] resumed", highlight=False)


@app.command("delete")
def delete_cmd(name: str) -> None:
    """Delete a schedule (runs it started are not affected)."""
    settings = Settings()
    get_schedule(settings, check_name(name))
    delete_schedule(settings, name)
    out.print(f"schedule [bold]{name}[/] deleted", highlight=False)


@app.command("trigger")
def trigger_cmd(name: str) -> None:
    """Start one run now, outside the cron and the overlap policy."""
    settings = Settings()
    run_id = trigger_schedule(settings, get_schedule(settings, check_name(name)))
    out.print(f"started run [bold]{run_id}[/]", highlight=False)
