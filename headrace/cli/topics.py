"""``headrace topics``: create and list the platform's Kafka topics."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from headrace.cli.common import fail
from headrace.errors import HeadraceError
from headrace.kafka import make_admin
from headrace.settings import Settings
from headrace.topic_admin import describe, ensure, list_topics, plan_topics

app = typer.Typer(help="Create and inspect headrace's Kafka topics.")
out = Console()
err = Console(stderr=True)


@app.command("ensure")
def ensure_cmd(
    partitions: Annotated[
        int | None,
        typer.Option(min=1, help="partitions of run-keyed topics [HEADRACE_PARTITIONS]"),
    ] = None,
    replication: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="replication factor [HEADRACE_REPLICATION_FACTOR, else the broker's default]",
        ),
    ] = None,
) -> None:
    """Create every topic of the topology that is missing (idempotent); warn on differences."""
    settings = Settings()
    plans = plan_topics(settings, partitions, replication)
    try:
        admin = make_admin(settings)
        report = ensure(settings, plans, admin)
        infos = {t.name: t for t in describe(admin, [p.name for p in plans])}
    except HeadraceError as exc:
        raise fail(exc) from None
    for p in plans:
        verb = "[green]created[/]" if p.name in report.created else "found  "
        t = infos.get(p.name)
        shape = (
            f"{t.partitions} partitions, replication {t.replication}, {t.cleanup_policy}"
            if t
            else "?"
        )
        out.print(f"{verb} {p.name} [dim]({shape})[/]", highlight=False)
    for warning in report.mismatches:
        err.print(f"[yellow]warning[/] {warning}", highlight=False)
    out.print(
        f"{len(report.created)} created, {len(report.found)} found on {settings.bootstrap}",
        highlight=False,
    )


@app.command("list")
def list_cmd(
    all_topics: Annotated[
        bool, typer.Option("--all", help="every topic, not only those under the prefix")
    ] = False,
) -> None:
    """Topics under HEADRACE_TOPIC_PREFIX with partitions, replication and cleanup policy."""
    settings = Settings()
    try:
        infos = list_topics(settings, all_topics)
    except HeadraceError as exc:
        raise fail(exc) from None
    table = Table(title=f"topics on {settings.bootstrap}")
    for col in ("name", "partitions", "replication", "cleanup"):
        table.add_column(col)
    for t in infos:
        table.add_row(t.name, str(t.partitions), str(t.replication), t.cleanup_policy)
    out.print(table)
    if not infos:
        err.print(
            f"no topics under {settings.topic_prefix!r} — "
            "create them with `headrace topics ensure`",
            highlight=False,
        )
