"""``headrace dlq``: the task dead-letter queues — list, show, redrive.

A task lands in ``tasks.<queue>.dlq`` after its last attempt failed, with its
whole attempt history. Entries whose step was parked (``retry.on_exhausted:
park``) keep their run waiting; ``redrive`` sends the run a ``RedriveTask``
command and the run schedules the task again with a fresh attempt budget.
See docs/tasks.md.
"""

from __future__ import annotations

import json
import os
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from headrace.errors import ErrorCode, HeadraceError
from headrace.history import iso_time
from headrace.services.tasks.dlq import Entry, find, read_entries, redrive, redrive_command
from headrace.settings import get_settings

app = typer.Typer(help="Task dead-letter queues: list, show and redrive dead tasks.")
out = Console(highlight=False, soft_wrap=True)

QueueOpt = Annotated[str | None, typer.Option("--queue", "-q", help="only this task queue")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON instead of a table")]


def _state(e: Entry) -> str:
    if e.status == "dead":
        return "parked" if e.parked else "failed"
    return e.status


@app.command("list")
def list_cmd(queue: QueueOpt = None, as_json: JsonOpt = False) -> None:
    """Entries of every task DLQ (or one queue's), oldest first.

    State: parked (the run waits: redrive it), failed (the step failed; a record
    only), redriven, closed (the run stopped waiting without a redrive).
    """
    entries = list(read_entries(get_settings(), queue).values())
    if as_json:
        for e in entries:
            out.print(json.dumps(_summary(e), sort_keys=True), markup=False)
        return
    if not entries:
        out.print("no dead tasks" + (f" in queue {queue}" if queue else ""))
        return
    table = Table("ID", "QUEUE", "RUN", "STEP", "ATTEMPTS", "ERROR", "STATE", "DEAD AT")
    for e in entries:
        s = _summary(e)
        table.add_row(
            e.id,
            e.queue,
            s["run"],
            s["step"],
            str(s["attempts"]),
            s["error"],
            _state(e),
            iso_time(int(e.record.get("time") or 0)),
        )
    out.print(table)


def _summary(e: Entry) -> dict[str, Any]:
    r = e.record
    err = r.get("error") or {}
    return {
        "id": e.id,
        "queue": e.queue,
        "run": f"{r.get('tenant')}/{r.get('run_id')}",
        "step": str(r.get("step")),
        "attempts": len(r.get("attempts") or ()),
        "error": f"{err.get('code')}: {err.get('message')}"[:80],
        "state": _state(e),
        "time": r.get("time"),
    }


@app.command("show")
def show_cmd(
    entry_id: Annotated[str, typer.Argument(metavar="ID", help="entry id (the dead task id)")],
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One entry: the task, why it died, and every attempt of its step."""
    e = find(get_settings(), entry_id, queue)
    if as_json:
        out.print(json.dumps(e.to_json(), sort_keys=True, indent=2), markup=False)
        return
    r = e.record
    err = r.get("error") or {}
    out.print(f"[bold]{e.id}[/]  queue {e.queue}  state {_state(e)}")
    out.print(f"run      {r.get('tenant')}/{r.get('run_id')}  ({r.get('workflow_type')})")
    out.print(f"step     {r.get('step')}  idempotency key {r.get('idempotency_key')}")
    out.print(f"reason   {r.get('reason')}  ({err.get('code')}: {err.get('message')})")
    out.print(f"input    {json.dumps(r.get('input'))[:200]}", markup=False)
    table = Table("ATTEMPT", "TASK", "WORKER", "DISPATCHED", "ENDED", "OUTCOME", "ERROR")
    for a in r.get("attempts") or ():
        a_err = a.get("error") or {}
        detail = a_err.get("code") or a.get("timeout") or ""
        table.add_row(
            str(a.get("attempt")),
            str(a.get("task_id")),
            str(a.get("worker") or "-"),
            iso_time(int(a.get("dispatched_at") or 0)),
            iso_time(int(a.get("ended_at") or 0)) if a.get("ended_at") else "-",
            str(a.get("outcome")),
            str(detail),
        )
    out.print(table)


@app.command("redrive")
def redrive_cmd(
    entry_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="the entry to redrive")
    ] = None,
    queue: QueueOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="every parked entry of --queue")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="recorded on the run")] = None,
) -> None:
    """Continue parked runs: their task is scheduled again with a fresh attempt budget."""
    settings = get_settings()
    if entry_id is None and not (queue and all_):
        raise HeadraceError(
            ErrorCode.CONFIG_INVALID,
            "name an entry (`headrace dlq redrive ID`) or a whole queue "
            "(`headrace dlq redrive --queue Q --all`)",
        )
    now = int(time.time() * 1000)
    actor = os.environ.get("USER") or "cli"
    if entry_id is not None:
        entries = [find(settings, entry_id, queue)]
    else:
        entries = [e for e in read_entries(settings, queue).values() if e.redrivable]
    commands = [redrive_command(e, now, actor, reason) for e in entries]
    redrive(settings, commands)
    for c in commands:
        out.print(f"redrive requested: {c.payload['task_id']} → run {c.tenant}/{c.run_id}")
    if not commands:
        out.print(f"nothing to redrive in queue {queue}: no parked entries")
