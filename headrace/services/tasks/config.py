"""Settings of the task service: ``HEADRACE_TASKS_*`` in the environment."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TaskSettings(BaseSettings):
    """Tuning of one task-service worker (the platform settings come from ``Settings``)."""

    model_config = SettingsConfigDict(env_prefix="HEADRACE_TASKS_", extra="ignore")

    batch: int = Field(500, ge=1, description="most requests and results handled per batch")
    batch_within: float = Field(
        0.002, gt=0, description="seconds a batch waits to fill (latency vs idle CPU)"
    )
    retain_finished: float = Field(
        3600.0,
        ge=0,
        description="seconds a finished task is remembered, so that a request re-sent by an "
        "orchestrator replay is not dispatched again",
    )
    deadline_batch: int = Field(
        2000, ge=1, description="most deadlines (timeouts, purges) handled per round"
    )
    idle_tick: float = Field(1.0, gt=0, description="longest sleep of the deadline loop (s)")
    ensure_timeout: float = Field(
        30.0,
        ge=0,
        description="seconds to keep retrying the creation of a new queue's topics when Kafka "
        "fails in a way that may pass; after that (or at once, when it cannot pass) the "
        "requests for that queue go to `dlq`",
    )
