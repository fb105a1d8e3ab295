"""The HTTP connector as a worker: queue ``http``, one handler for every task on it.

``headrace serve http`` runs it (and ``headrace dev up`` starts it). Each task's
``config`` says what to call (:mod:`.config`); the connector makes the call
(:mod:`.caller`) and reports the mapped response or a coded failure. Tuning
comes from the environment (``HEADRACE_HTTP_*``), see :class:`HttpConnectorSettings`.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from headrace.connectors.http.breaker import Breakers
from headrace.connectors.http.caller import HttpCaller
from headrace.core.durations import parse_duration
from headrace.sdk import TaskContext, Worker
from headrace.sdk.handlers import CATCH_ALL
from headrace.settings import Settings, get_settings


class HttpConnectorSettings(BaseSettings):
    """``HEADRACE_HTTP_<NAME>``: how the connector process runs."""

    model_config = SettingsConfigDict(env_prefix="HEADRACE_HTTP_", extra="ignore")

    queue: str = Field("http", description="the task queue the connector serves")
    concurrency: int = Field(64, ge=1, description="HTTP calls in flight at once")
    circuit_failures: int = Field(5, ge=1, description="consecutive failures that open a circuit")
    circuit_cooldown: str = Field("30s", description="how long an open circuit fails fast")
    max_connections: int = Field(100, ge=1, description="connection pool size per TLS setup")


def http_worker(
    settings: Settings | None = None,
    connector: HttpConnectorSettings | None = None,
    **worker_options: Any,
) -> Worker:
    """A :class:`~headrace.sdk.Worker` that serves the HTTP connector's queue."""
    conf = connector or HttpConnectorSettings()
    worker = Worker(
        queues=[conf.queue],
        concurrency=worker_options.pop("concurrency", conf.concurrency),
        settings=settings or get_settings(),
        **worker_options,
    )
    caller = HttpCaller(
        breakers=Breakers(
            failures_to_open=conf.circuit_failures,
            cooldown_ms=parse_duration(conf.circuit_cooldown),
            clock=lambda: time.monotonic_ns() // 1_000_000,
        ),
        max_connections=conf.max_connections,
    )

    @worker.task(CATCH_ALL)
    async def call(input: Any, ctx: TaskContext) -> Any:
        return await caller.call(
            ctx.config,
            input,
            idempotency_key=ctx.idempotency_key,
            time_left_s=ctx.time_left(),
        )

    worker.on_shutdown(caller.aclose)
    return worker
