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


@app.command("http")
def serve_http(
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", help="HTTP calls in flight at once")
    ] = None,
    web_port: Annotated[
        int, typer.Option("--web-port", help="port of /metrics and /healthz (0: none)")
    ] = 6071,
) -> None:
    """The HTTP connector: tasks on queue `http` become HTTP calls (docs/connectors/http.md).

    Tuning: HEADRACE_HTTP_QUEUE, HEADRACE_HTTP_CONCURRENCY, HEADRACE_HTTP_CIRCUIT_FAILURES,
    HEADRACE_HTTP_CIRCUIT_COOLDOWN, HEADRACE_HTTP_MAX_CONNECTIONS.
    """
    from headrace.connectors.http import http_worker
    from headrace.logs import configure
    from headrace.settings import get_settings

    settings = get_settings()
    configure(settings.log_level, settings.log_format, service="http")
    options: dict[str, int] = {} if concurrency is None else {"concurrency": concurrency}
    http_worker(settings, None, **options).run(metrics_port=web_port or None)


@app.command("tasks")
def serve_tasks(
    instance: InstanceOpt = "0",
    web_port: Annotated[
        int, typer.Option("--web-port", help="port of /metrics and /healthz (0: none)")
    ] = 6069,
) -> None:
    """The task service: dispatches tasks to workers, watches leases and timeouts, keeps DLQs.

    Tuning: HEADRACE_TASKS_BATCH, HEADRACE_TASKS_BATCH_WITHIN, HEADRACE_TASKS_RETAIN_FINISHED
    (seconds a finished task is remembered against replayed requests), HEADRACE_TASKS_IDLE_TICK.
    """
    from headrace.services.tasks import TaskService
    from headrace.settings import get_settings

    TaskService(get_settings(), instance=instance, web_port=web_port or None).run()


@app.command("signals")
def serve_signals(
    instance: InstanceOpt = "0",
    web_port: Annotated[
        int, typer.Option("--web-port", help="port of /metrics and /healthz (0: none)")
    ] = 6072,
) -> None:
    """The signal service: correlation index, buffering until a run waits, broadcast.

    Tuning: HEADRACE_SIGNAL_BUFFER_TTL (how long an unawaited signal is kept, default 7d),
    HEADRACE_SIGNAL_SWEEP_INTERVAL, HEADRACE_API_URL (the query API, for broadcasts).
    """
    from headrace.services.signals import SignalService
    from headrace.settings import get_settings

    SignalService(get_settings(), instance=instance, web_port=web_port or None).run()


@app.command("api")
def serve_api(
    instance: InstanceOpt = "0",
    port: Annotated[
        int | None, typer.Option("--port", help="HTTP port (default HEADRACE_API_PORT, 8080)")
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="bind address (default HEADRACE_API_HOST)")
    ] = None,
) -> None:
    """The query API: views of runs, approvals and step durations over HTTP; control operations."""
    from headrace.services.api.service import run_api
    from headrace.settings import get_settings

    run_api(get_settings(), instance=instance, host=host, port=port)
