"""How approval records look in a terminal: the inbox table and the detail view."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

from headrace.cli.listing import ago
from headrace.history import iso_time

STATUS_COLOURS = {
    "pending": "cyan",
    "approved": "green",
    "rejected": "red",
    "expired": "yellow",
    "cancelled": "dim",
}


def progress(record: dict[str, Any]) -> str:
    """``1/2 threshold veto``: approvals so far of those needed, the quorum, a veto."""
    granted = sum(1 for d in record["decisions"] if d["decision"] == "granted")
    text = f"{granted}/{record['need']} {record['quorum']}"
    if record.get("veto"):
        text += " veto"
    return text


def approvers(record: dict[str, Any]) -> str:
    """Who may decide: assignees, then ``@role`` for roles."""
    return ", ".join([*record["assignees"], *(f"@{r}" for r in record["roles"])])


def expires(record: dict[str, Any]) -> str:
    exp = record.get("expires")
    if not exp:
        return "-"
    if exp.get("due") is not None:
        return iso_time(exp["due"])
    business = exp.get("business") or {}
    if "days" in business:
        span = f"{business['days']}d"
    else:
        span = f"{int(business.get('duration_ms') or 0) // 60_000}m"
    return f"{span} of {business.get('calendar')}"


def approval_table(records: list[dict[str, Any]]) -> Table:
    now = int(time.time() * 1000)
    tenants = len({r["tenant"] for r in records}) > 1
    table = Table(box=None, pad_edge=False)
    table.add_column("id", no_wrap=True)
    if tenants:
        table.add_column("tenant", no_wrap=True)
    for name in ("step", "quorum", "approvers", "asked", "expires", "status"):
        table.add_column(name, no_wrap=name in ("asked", "status"), overflow="fold")
    for r in records:
        colour = STATUS_COLOURS.get(r["status"], "white")
        flags = " [magenta](step-up)[/]" if r.get("step_up") else ""
        cells = [r["approval_id"], *([r["tenant"]] if tenants else [])]
        cells += [
            f"{r['step']} [dim]{r['type']}@{r['version']}[/]",
            progress(r),
            approvers(r) + flags,
            ago(r["requested_at"], now),
            expires(r),
            f"[{colour}]{r['status']}[/]",
        ]
        table.add_row(*cells)
    return table


def show_record(out: Console, r: dict[str, Any]) -> None:
    colour = STATUS_COLOURS.get(r["status"], "white")
    out.print(f"[bold]{r['approval_id']}[/]  [{colour}]{r['status']}[/]", markup=True)
    rows = [
        ("run", f"{r['tenant']}/{r['run_id']} ({r['type']}@{r['version']}), step {r['step']}"),
        ("quorum", progress(r)),
        ("approvers", approvers(r) or "-"),
        ("delegation", "allowed" if r.get("delegation") else "not allowed"),
        ("step-up", _step_up(r.get("step_up"))),
        ("requested", iso_time(r["requested_at"])),
        ("expires", expires(r) + (" (escalated)" if r.get("escalated") else "")),
        ("reminders", str(r.get("reminders", 0))),
    ]
    for name, value in rows:
        out.print(f"  {name:<11}{value}")
    if not r["decisions"]:
        out.print("  [dim]no decisions yet[/]", markup=True)
        return
    table = Table("at", "user", "decision", "reason", box=None, pad_edge=False)
    for d in r["decisions"]:
        what = d["decision"] + (f" → {d['to']}" if d.get("to") else "")
        if d.get("step_up"):
            what += f" ({d['step_up'].get('method')})"
        table.add_row(iso_time(d["at"]), str(d["user"]), what, d.get("reason") or "")
    out.print(table)


def _step_up(rule: Any) -> str:
    if not rule:
        return "not required"
    if not isinstance(rule, dict):
        return "required"
    methods = ", ".join(rule.get("methods") or []) or "any method"
    return f"required: {methods}, at most {int(rule.get('max_age_ms', 0)) // 1000} s old"
