"""``headrace start`` and ``headrace history``: start a run like any client would, read its log.

``start`` produces an ``io.headrace.run.start`` CloudEvent (binary mode) to
``ingress`` — exactly what a service in any language, or ``kcat``, would send —
and prints the run id the router will give the run. ``--wait`` then follows the
run's partition of ``events`` until the run ends.

``history`` reads the run's partition of ``events``, collapses byte-identical
redeliveries, prints a timeline and, with ``--verify``, checks the hash chain.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from headrace.cli.common import err, fail, load_json, usage
from headrace.core.chain import ChainReport
from headrace.core.durations import parse_duration
from headrace.definitions import DefinitionCatalog
from headrace.errors import ErrorCode, HeadraceError
from headrace.history import (
    Logged,
    RunLog,
    as_json,
    end_of_run_partition,
    follow_run,
    outcome_of,
    read_run,
    report_json,
    row,
    run_partition,
)
from headrace.kafka import make_producer, produce_sync
from headrace.settings import Settings
from headrace.streams.cloudevents_in import (
    DEFAULT_TENANT,
    START_TYPE,
    Rejected,
    encode_event,
    start_run_id,
)
from headrace.streams.routes import check_input

CLI_SOURCE = "/headrace/cli"
EXIT_TIMEOUT = 124  # like timeout(1)

out = Console(highlight=False, soft_wrap=True)


def _precheck(settings: Settings, workflow: str, version: int | None, data: Any) -> None:
    """Fail fast on what the router would dead-letter: an unknown workflow, a bad input."""
    with DefinitionCatalog(settings).start(wait=30) as catalog:
        deployed = catalog.get(workflow, version)
    if deployed is None:
        name = workflow if version is None else f"{workflow}@{version}"
        raise HeadraceError(
            ErrorCode.DEFINITION_NOT_FOUND,
            f"{name} is not deployed — `headrace deploy FILE` first (or --no-check to send anyway)",
        )
    try:
        check_input(deployed, data)
    except Rejected as exc:
        raise HeadraceError(exc.code, exc.message) from None


def start_cmd(
    workflow: Annotated[str, typer.Argument(metavar="TYPE", help="workflow type")],
    input_: Annotated[
        str, typer.Option("--input", "-i", help="run input: JSON, or @file with JSON")
    ] = "{}",
    tenant: Annotated[str, typer.Option("--tenant", "-t")] = DEFAULT_TENANT,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="default: derived from the event's id")
    ] = None,
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="default: the latest deployed")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="follow the run until it ends; exit 1 if it fails")
    ] = False,
    timeout: Annotated[
        str, typer.Option("--timeout", help="how long --wait waits, e.g. 30s, 5m")
    ] = "5m",
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="check workflow and input before sending")
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="print only the run id")] = False,
) -> None:
    """Start a run: produce an io.headrace.run.start CloudEvent to the ingress topic."""
    settings = Settings()
    try:
        data = load_json(input_, "--input")
    except HeadraceError as exc:
        raise fail(exc, 2) from None
    try:
        wait_s = parse_duration(timeout) / 1000
    except ValueError as exc:
        raise usage(f"--timeout: {exc}") from None
    event_id = str(uuid.uuid4())
    rid = run_id or start_run_id(CLI_SOURCE, event_id)
    payload: dict[str, Any] = {"workflow": workflow, "input": data}
    if version is not None:
        payload["version"] = version
    if run_id is not None:
        payload["run_id"] = run_id
    event = encode_event(
        START_TYPE, CLI_SOURCE, payload, event_id=event_id, tenant=tenant, key=f"{tenant}/{rid}"
    )
    try:
        if check:
            _precheck(settings, workflow, version, data)
        # A new run's events all come after this offset; a named run may exist already.
        begin = end_of_run_partition(settings, tenant, rid) if wait and run_id is None else 0
        produce_sync(
            make_producer(settings, "headrace-cli"),
            settings.topics.ingress,
            event.value,
            key=event.key,
            headers=event.headers,  # type: ignore[arg-type]
        )
    except HeadraceError as exc:
        raise fail(exc) from None
    partition = run_partition(settings, tenant, rid)
    if quiet:
        typer.echo(rid)
    else:
        out.print(
            f"started {workflow} run [bold]{rid}[/] (tenant {tenant}, partition {partition}, "
            f"event {event_id})",
            markup=True,
        )
    if wait:
        raise typer.Exit(_wait(settings, tenant, rid, begin, wait_s, quiet))


def _wait(
    settings: Settings, tenant: str, run_id: str, begin: int, wait_s: float, quiet: bool
) -> int:
    deadline = time.monotonic() + wait_s
    last: Logged | None = None
    try:
        for r in follow_run(settings, tenant, run_id, start=begin, deadline=deadline):
            last = r
            if not quiet:
                seq, when, kind, what = row(r)
                err.print(f"[dim]{seq:>4}  {when}  {kind:<22} {what}[/]", markup=True)
    except HeadraceError as exc:
        raise fail(exc) from None
    if last is None or not last.terminal or last.event is None:
        err.print(
            f"[yellow]timeout[/] run {tenant}/{run_id} has not ended after {wait_s:.0f} s "
            f"(`headrace history {run_id} --tenant {tenant} --follow` keeps watching)",
            markup=True,
        )
        return EXIT_TIMEOUT
    outcome = outcome_of(last.event)
    detail = json.dumps(outcome.detail, ensure_ascii=False)
    colour = "green" if outcome.exit_code == 0 else "red"
    out.print(f"[{colour}]{outcome.status}[/] {detail}", markup=True)
    return outcome.exit_code


class Format(StrEnum):
    TEXT = "text"
    JSON = "json"


def history_cmd(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="the run id")],
    tenant: Annotated[str, typer.Option("--tenant", "-t")] = DEFAULT_TENANT,
    verify: Annotated[
        bool, typer.Option("--verify", help="check the hash chain; exit 1 if it is broken")
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing new events until the run ends")
    ] = False,
    fmt: Annotated[Format, typer.Option("--format")] = Format.TEXT,
) -> None:
    """A run's events as a timeline (seq, time, type, summary), read from the events topic."""
    settings = Settings()
    try:
        log = (
            _follow(settings, tenant, run_id, fmt) if follow else read_run(settings, tenant, run_id)
        )
    except HeadraceError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    report = log.verify() if verify else None
    if not follow:
        _print(log, fmt, report)
    elif report is not None:
        if fmt is Format.JSON:
            typer.echo(json.dumps({"verify": report_json(report)}))
        else:
            _print_verdict(report)
    if report is not None and not report.ok:
        raise typer.Exit(1)


def _print(log: RunLog, fmt: Format, report: ChainReport | None) -> None:
    records = log.distinct()
    if fmt is Format.JSON:
        doc: dict[str, Any] = {
            "run": {"tenant": log.tenant, "run_id": log.run_id},
            "topic": log.topic,
            "partition": log.partition,
            "events": [as_json(r) for r in records],
            "duplicates": log.duplicates,
        }
        if report is not None:
            doc["verify"] = report_json(report)
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    table = Table(
        title=f"{log.run_key}  ({log.topic}[{log.partition}])",
        title_justify="left",
        box=None,
        pad_edge=False,
    )
    rows = [row(r) for r in records]
    # one line per event, as in a log: only the summary gives way in a narrow
    # terminal (--format json has every field in full)
    for i, name in enumerate(("seq", "time", "type")):
        width = max([len(name), *(len(r[i]) for r in rows)])
        table.add_column(name, no_wrap=True, min_width=width, justify="right" if i == 0 else "left")
    table.add_column("summary", no_wrap=True, overflow="ellipsis", min_width=10)
    for cells in rows:
        table.add_row(*cells)
    out.print(table)
    if log.duplicates:
        out.print(f"[dim]{log.duplicates} byte-identical redelivery(ies) collapsed[/]", markup=True)
    if report is not None:
        _print_verdict(report)


def _print_verdict(report: ChainReport) -> None:
    if report.ok:
        out.print(
            f"[green]chain verified[/]: {report.count} events, seq 1..{report.last_seq}, "
            f"head {report.head.hex()[:16]}…, {report.duplicates} duplicate(s) collapsed",
            markup=True,
        )
    else:
        out.print(
            f"[red]chain BROKEN[/] at seq {report.bad_seq}: {report.reason} — {report.detail} "
            f"({report.count} events verified before it, {report.duplicates} duplicate(s) "
            "collapsed)",
            markup=True,
        )


def _follow(settings: Settings, tenant: str, run_id: str, fmt: Format) -> RunLog:
    log = RunLog(tenant, run_id, settings.topics.events, run_partition(settings, tenant, run_id))
    for r in follow_run(settings, tenant, run_id):
        log.records.append(r)
        if fmt is Format.JSON:
            typer.echo(json.dumps(as_json(r), ensure_ascii=False))
        else:
            seq, when, kind, what = row(r)
            out.print(f"{seq:>4}  {when}  {kind:<22} {what}", markup=False)
        sys.stdout.flush()
    return log


def register(app: typer.Typer) -> None:
    app.command("start")(start_cmd)
    app.command("history")(history_cmd)
