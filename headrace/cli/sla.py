"""``headrace sla report``: met / at risk / breached per step, and which open steps will breach."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from headrace.cli.common import fail
from headrace.errors import HeadraceError
from headrace.services.api.client import ApiClient

out = Console(highlight=False, soft_wrap=True)

app = typer.Typer(
    help="Service levels: how steps and runs with an `sla` fare, from the query API.",
    no_args_is_help=True,
)

VERDICT_COLOURS = {
    "breached": "red",
    "likely": "red",
    "possible": "yellow",
    "unlikely": "green",
    "unknown": "dim",
}


def span(ms: int | None) -> str:
    """``950ms``, ``12.5s``, ``4m``, ``3h``, ``2d`` (or ``-``)."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.1f}{unit}".replace(".0", "")
    return f"{s:.0f}s"


@app.command("report")
def report_cmd(
    wtype: Annotated[str | None, typer.Option("--type", help="one workflow type")] = None,
    since: Annotated[
        str,
        typer.Option(
            "--since", help="steps that ended since: a duration ago (7d), ISO time or epoch ms"
        ),
    ] = "7d",
    until: Annotated[str | None, typer.Option("--until", help="and before (same forms)")] = None,
    show_open: Annotated[
        int, typer.Option("--open", min=0, help="most open steps to list with their prediction")
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="the API's JSON report")] = False,
) -> None:
    """Per step with an SLA (and per run type with one): met, at risk, breached; open ones.

    `met` counts steps that ended within their SLA; `at-risk` those among them
    that passed the near-breach mark (e.g. 80 %); `breached` those that ended
    late; p50/p90 their durations. `open` are running now, `late` of them past
    the deadline already, `likely` predicted to breach: the prediction compares
    how long each has taken with past completed durations of the same step —
    `likely` means over half of the past ones that took this long went on past
    the deadline.
    """
    try:
        with ApiClient() as api:
            body = api.sla_report(type=wtype, since=since, until=until, open=show_open, fresh=True)
    except HeadraceError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(body, indent=2, ensure_ascii=False))
        return
    if not body["steps"]:
        out.print(f"no step or run with an SLA ended or is open since {since}")
        return
    for wtype in dict.fromkeys(r["type"] for r in body["steps"]):
        out.print(_rows(wtype, [r for r in body["steps"] if r["type"] == wtype]))
        mine = [p for p in body["open"] if p["type"] == wtype]
        if mine:
            out.print(_predictions(mine))
        out.print()
    if body["open_total"] > len(body["open"]):
        more = body["open_total"] - len(body["open"])
        out.print(f"[dim]{more} more open (--open N lists more)[/]", markup=True)
    if body.get("truncated"):
        out.print(
            "[yellow]the report stopped at its scan budget (part of the runs or step samples); "
            "narrow it with --type or --since[/]"
        )


def _rows(wtype: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False, title=f"[bold]{wtype}[/]", title_justify="left")
    table.add_column("step")
    for name in ("ended", "met", "at-risk", "breached", "p50", "p90", "open", "late", "likely"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["step"] or "(run)",
            str(r["ended"]),
            f"[green]{r['met']}[/]",
            f"[yellow]{r['at_risk']}[/]" if r["at_risk"] else "0",
            f"[red]{r['breached']}[/]" if r["breached"] else "0",
            span(r["p50_ms"]),
            span(r["p90_ms"]),
            str(r["open"]),
            f"[red]{r['open_breached']}[/]" if r["open_breached"] else "0",
            f"[red]{r['predicted_breaches']}[/]" if r["predicted_breaches"] else "0",
        )
    return table


def _predictions(items: list[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False, title="open, predicted", title_justify="left")
    for name in ("run", "step", "elapsed", "budget", "expected", "verdict"):
        table.add_column(name, no_wrap=name != "run", overflow="fold")
    for p in items:
        colour = VERDICT_COLOURS.get(p["verdict"], "white")
        verdict = p["verdict"]
        if p.get("probability") is not None and verdict != "breached":
            verdict += f" ({100 * p['probability']:.0f}% of {p['basis']})"
        elif p.get("beyond_history"):
            verdict += " (beyond history)"
        table.add_row(
            f"{p['tenant']}/{p['run_id']}",
            p["step"] or "(run)",
            span(p["elapsed_ms"]),
            span(p["budget_ms"]),
            span(p["expected_ms"]),
            f"[{colour}]{verdict}[/]",
        )
    return table
