"""``headrace calendar``: business calendars for business-time waits, SLAs and expiries."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from headrace.core.calendar import WEEKDAYS, Calendar, add, add_days, calendar_document
from headrace.core.durations import format_duration, parse_duration
from headrace.core.localtime import to_instant, to_local
from headrace.errors import ErrorCode, HeadraceError
from headrace.services.timers.calendars import (
    delete_calendar,
    publish_calendar,
    read_calendars,
)
from headrace.settings import Settings

app = typer.Typer(
    help="Business calendars: time zone, working hours, holidays, half-days (`calendars` topic)."
)
out = Console()


def _pairs(values: list[str], what: str, example: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for v in values:
        key, sep, rest = v.partition("=")
        if not sep or not key.strip():
            raise HeadraceError(ErrorCode.CONFIG_INVALID, f"{what} {v!r}: write it as {example}")
        pairs[key.strip()] = rest.strip()
    return pairs


@app.command("set")
def set_cmd(
    name: Annotated[str, typer.Argument(help="calendar name, as used in `business.calendar`")],
    tz: Annotated[
        str | None, typer.Option("--tz", help="IANA time zone, e.g. Europe/Paris [UTC]")
    ] = None,
    hours: Annotated[
        list[str] | None,
        typer.Option(help="working hours: 'mon-fri=09:00-12:30,13:30-17:30' (repeatable)"),
    ] = None,
    holiday: Annotated[
        list[str] | None, typer.Option(help="a closed date, 2026-12-25 (repeatable)")
    ] = None,
    half_day: Annotated[
        list[str] | None,
        typer.Option("--half-day", help="a date with its own hours: 2026-12-24=09:00-13:00"),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(help="a YAML/JSON document {timezone, hours, holidays, half_days}"),
    ] = None,
) -> None:
    """Create or replace a calendar. Timers already armed keep their due times."""
    doc: dict[str, Any] = {}
    if file is not None:
        try:
            doc = yaml.safe_load(file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise HeadraceError(ErrorCode.CONFIG_INVALID, f"{file}: {exc}") from exc
        if not isinstance(doc, dict):
            raise HeadraceError(ErrorCode.CONFIG_INVALID, f"{file}: expected a mapping")
    doc["name"] = name
    if tz is not None or "timezone" not in doc:
        doc["timezone"] = tz or "UTC"
    if hours:
        doc["hours"] = {**doc.get("hours", {}), **_pairs(hours, "--hours", "'mon-fri=09:00-17:00'")}
    if holiday:
        doc["holidays"] = [*doc.get("holidays", []), *holiday]
    if half_day:
        more = _pairs(half_day, "--half-day", "'2026-12-24=09:00-13:00'")
        doc["half_days"] = {**doc.get("half_days", {}), **more}
    cal = publish_calendar(Settings(), doc)
    out.print(f"calendar [bold]{cal.name}[/] set ({cal.timezone})", highlight=False)


def _find(name: str) -> Calendar:
    for n, cal in read_calendars(Settings()):
        if n == name:
            return cal
    raise HeadraceError(
        ErrorCode.CONFIG_INVALID,
        f"there is no calendar {name!r} — `headrace calendar list` shows them",
    )


@app.command("show")
def show_cmd(
    name: str,
    fmt: Annotated[str, typer.Option("--format", help="text or json")] = "text",
) -> None:
    """A calendar's time zone, weekly hours, holidays and half-days."""
    doc = calendar_document(_find(name))
    if fmt == "json":
        out.print_json(json.dumps(doc))
        return
    out.print(f"[bold]{doc['name']}[/] ({doc['timezone']})", highlight=False)
    for day in WEEKDAYS:
        out.print(f"  {day}  {doc['hours'][day] or '-'}", highlight=False)
    if doc["holidays"]:
        out.print(f"  holidays   {', '.join(doc['holidays'])}", highlight=False)
    for d, h in doc["half_days"].items():
        out.print(f"  half-day   {d} {h}", highlight=False)


@app.command("list")
def list_cmd() -> None:
    """Every calendar with its time zone and weekly working time."""
    table = Table(title="calendars")
    for col in ("name", "timezone", "hours/week", "holidays", "half-days"):
        table.add_column(col)
    for name, cal in read_calendars(Settings()):
        week = sum(e - s for day in cal.week for s, e in day)
        table.add_row(
            name, cal.timezone, f"{week / 60:g}", str(len(cal.holidays)), str(len(cal.special))
        )
    out.print(table)


@app.command("delete")
def delete_cmd(name: str) -> None:
    """Delete a calendar (timers armed against it keep their due times)."""
    _find(name)
    delete_calendar(Settings(), name)
    out.print(f"calendar [bold]{name}[/] deleted", highlight=False)


@app.command("due")
def due_cmd(
    name: str,
    duration: Annotated[str | None, typer.Option(help="business time, e.g. 16h")] = None,
    days: Annotated[int | None, typer.Option(help="business days instead")] = None,
    start: Annotated[
        str | None,
        typer.Option("--from", help="local start time in the calendar's zone (default: now)"),
    ] = None,
) -> None:
    """When N business hours or days from a moment end (what a timer would be due)."""
    if (duration is None) == (days is None):
        raise HeadraceError(ErrorCode.CONFIG_INVALID, "give one of --duration or --days")
    cal = _find(name)
    t = (
        int(datetime.now().timestamp() * 1000)
        if start is None
        else to_instant(datetime.fromisoformat(start), cal.tz)
    )
    if duration is not None:
        due, what = add(cal, t, parse_duration(duration)), format_duration(parse_duration(duration))
    else:
        assert days is not None
        due, what = add_days(cal, t, days), f"{days} business day(s)"
    out.print(
        f"{what} from {to_local(t, cal.tz):%Y-%m-%d %H:%M} is "
        f"{to_local(due, cal.tz):%a %Y-%m-%d %H:%M:%S} ({cal.timezone})",
        highlight=False,
    )
