"""Run a headrace faust app as a worker process: JSON logs, /metrics, graceful SIGTERM.

Every stream service (orchestrator, timers, tasks, signals, ingress router)
starts through :func:`run_worker`, so they all log, expose metrics and stop
the same way: on SIGTERM faust stops fetching, lets the agents finish the
batch in hand, commits offsets, flushes producers and leaves the group.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from headrace.settings import Settings


def logging_config(settings: Settings, service: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for faust's worker: JSON (or text) on stderr."""
    formatter: dict[str, Any]
    if settings.log_format == "json":
        formatter = {"()": "headrace.logs.JsonFormatter", "service": service}
    else:
        formatter = {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"headrace": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "headrace",
            }
        },
        "root": {"handlers": ["stderr"], "level": settings.log_level.upper()},
        "loggers": {
            # faust and aiokafka are chatty at INFO about every rebalance step
            name: {"level": settings.log_level_libraries.upper()}
            for name in ("faust", "aiokafka", "mode")
        },
    }


def add_metrics_page(app: faust.App) -> None:
    """Serve prometheus-client's registry at ``/metrics`` on the worker's web port."""

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "app": app.conf.id})


def run_worker(
    app: faust.App,
    settings: Settings,
    service: str,
    *,
    on_started: Callable[[], None] | None = None,
) -> None:
    """Run ``app`` until SIGTERM/SIGINT; returns after a clean stop."""
    if app.conf.web_enabled:
        add_metrics_page(app)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.upper(),
        logging_config=logging_config(settings, service),
        redirect_stdouts=False,
        override_logging=True,
    )
    if on_started is not None:
        app.on_startup_finished = on_started
    logging.getLogger("headrace.runner").info("starting %s", service)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
