"""``headrace signal``: send a signal to one run, to a correlation key, or to every run of a type.

It writes one message to the ``signals`` topic — the same message the ingress
router writes for an ``io.headrace.run.signal`` CloudEvent, built by the same
encoder (:func:`headrace.core.outbox.signal_message`) — for the signal
service, which delivers it, buffers it until a run waits, or (broadcast)
resolves the runs through the query API. See docs/signals.md.

::

    headrace signal RUN NAME [--tenant T] --data JSON
    headrace signal --correlation KEY NAME [--tenant T] --data JSON
    headrace signal --broadcast TYPE NAME [--tenant T] [--filter JQ] --data JSON
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated

import typer
from rich.console import Console

from headrace.cli.common import load_json
from headrace.core.expr import compile_expr
from headrace.core.outbox import broadcast_body, signal_body, signal_message
from headrace.kafka import make_producer, produce_sync
from headrace.settings import Settings
from headrace.streams.cloudevents_in import DEFAULT_TENANT, RUN_ID_PATTERN, TENANT_PATTERN

out = Console(highlight=False, soft_wrap=True)


def _usage(message: str) -> typer.BadParameter:
    return typer.BadParameter(message)


def signal_cmd(
    args: Annotated[
        list[str],
        typer.Argument(
            metavar="[RUN] NAME",
            help="the run and the signal name; only NAME with --correlation or --broadcast",
            show_default=False,
        ),
    ],
    data: Annotated[
        str, typer.Option("--data", "-d", help="the signal's data: JSON, or @file with JSON")
    ] = "null",
    tenant: Annotated[
        str | None,
        typer.Option(
            "--tenant", "-t", help=f"the runs' tenant (default {DEFAULT_TENANT!r}; broadcast: all)"
        ),
    ] = None,
    correlation: Annotated[
        str | None,
        typer.Option("--correlation", "-c", help="every run waiting on this correlation key"),
    ] = None,
    broadcast: Annotated[
        str | None,
        typer.Option("--broadcast", "-b", metavar="TYPE", help="every live run of this type"),
    ] = None,
    filter_expr: Annotated[
        str | None,
        typer.Option("--filter", help="broadcast: only runs whose input passes this jq filter"),
    ] = None,
    signal_id: Annotated[
        str | None,
        typer.Option("--id", help="the signal's id (default: new); a re-sent id is delivered once"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="print only the signal id")] = False,
) -> None:
    """Send a signal to a run, to every run waiting on a correlation key, or to a workflow type.

    Signals nobody waits for yet are kept by the signal service
    (HEADRACE_SIGNAL_BUFFER_TTL, default 7 days) and delivered, in the order they
    arrived, when a run starts waiting.
    """
    if correlation is not None and broadcast is not None:
        raise _usage("give at most one of --correlation and --broadcast")
    addressed = correlation is not None or broadcast is not None
    if len(args) != (1 if addressed else 2):
        raise _usage(
            "give NAME with --correlation or --broadcast, else RUN NAME "
            f"(got {len(args)} argument{'s' if len(args) != 1 else ''})"
        )
    if filter_expr is not None and broadcast is None:
        raise _usage("--filter only applies to --broadcast")
    name = args[-1]
    if tenant is not None and not TENANT_PATTERN.match(tenant):
        raise _usage(f"--tenant {tenant!r} is not a tenant name (letters, digits, _.-)")
    value = load_json(data, "--data")
    sid = signal_id or f"cli:{uuid.uuid4()}"
    now = int(time.time() * 1000)
    if broadcast is not None:
        if filter_expr is not None:
            compile_expr(filter_expr)  # refuse a bad filter here, not in the DLQ
        body = broadcast_body(
            signal_id=sid,
            signal=name,
            workflow_type=broadcast,
            data=value,
            time=now,
            tenant=tenant,
            filter_expr=filter_expr,
        )
        target = f"every live {broadcast} run" + (f" of tenant {tenant}" if tenant else "")
    elif correlation is not None:
        t = tenant or DEFAULT_TENANT
        body = signal_body(
            signal_id=sid, signal=name, tenant=t, data=value, time=now, correlation=correlation
        )
        target = f"runs waiting on {correlation!r} (tenant {t})"
    else:
        run_id, t = args[0], tenant or DEFAULT_TENANT
        if not RUN_ID_PATTERN.match(run_id):
            raise _usage(f"{run_id!r} is not a run id")
        body = signal_body(
            signal_id=sid, signal=name, tenant=t, data=value, time=now, run_id=run_id
        )
        target = f"run {t}/{run_id}"
    settings = Settings()
    m = signal_message(body, settings.routing)
    produce_sync(
        make_producer(settings, "headrace-cli"),
        m.topic,
        m.value,
        key=m.key,
        headers=m.headers,  # type: ignore[arg-type]
        partition=m.partition,
    )
    if quiet:
        typer.echo(sid)
    else:
        out.print(f"signal {name!r} sent to {target} (id {sid})")


def register(app: typer.Typer) -> None:
    app.command("signal", no_args_is_help=True)(signal_cmd)
