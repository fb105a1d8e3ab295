"""``headrace serve <service>``: run one headrace service in the foreground.

Each service is its own process (and consumer group); run several workers of
one service on a host with distinct ``--instance`` values (data directory) and
``--web-port`` values (metrics). SIGTERM drains and stops it cleanly.
"""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="Run one headrace service in the foreground (SIGTERM drains it).")

InstanceOpt = Annotated[
    str,
    typer.Option("--instance", help="worker name; separates data dirs of workers on one host"),
]


@app.command("orchestrator")
def serve_orchestrator(
    instance: InstanceOpt = "0",
    web_port: Annotated[
        int, typer.Option("--web-port", help="port of /metrics and /healthz (0: none)")
    ] = 6066,
    batch: Annotated[int, typer.Option(help="most commands decided per batch")] = 500,
    batch_within: Annotated[
        float, typer.Option(help="seconds a batch waits to fill (latency vs idle CPU)")
    ] = 0.002,
) -> None:
    """The orchestrator: decides commands, appends events, keeps run state in RocksDB."""
    from headrace.settings import get_settings
    from headrace.streams.orchestrator import Orchestrator

    Orchestrator(
        get_settings(),
        instance=instance,
        web_port=web_port or None,
        batch_size=batch,
        batch_within=batch_within,
    ).run()


@app.command("router")
def serve_router(
    instance: InstanceOpt = "0",
    web_port: Annotated[int, typer.Option("--web-port", help="port of /metrics (0: none)")] = 6067,
    batch: Annotated[int, typer.Option(help="most ingress records routed per batch")] = 1000,
) -> None:
    """The ingress router: CloudEvents on `ingress` become commands, signals or DLQ records."""
    from headrace.settings import get_settings
    from headrace.streams.router import run_router

    run_router(get_settings(), web_port=web_port or None, batch_size=batch, instance=instance)


@app.command("timers")
def serve_timers(
    instance: InstanceOpt = "0",
    web_port: Annotated[
        int, typer.Option("--web-port", help="port of /metrics and /healthz (0: none)")
    ] = 6068,
) -> None:
    """The timer service: durable timers, cron schedules, business calendars.

    Tuning: HEADRACE_TIMERS_FIRE_RATE (timers fired per second per partition),
    HEADRACE_TIMERS_FIRE_BATCH, HEADRACE_TIMERS_ARM_BATCH, HEADRACE_TIMERS_BACKLOG_CAP.
    """
    from headrace.services.timers import TimerService
    from headrace.settings import get_settings

    TimerService(get_settings(), instance=instance, web_port=web_port or None).run()
