"""Settings of the timer service: ``HEADRACE_TIMERS_*`` in the environment."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TimerSettings(BaseSettings):
    """Tuning of one timer-service worker (the platform settings come from ``Settings``)."""

    model_config = SettingsConfigDict(env_prefix="HEADRACE_TIMERS_", extra="ignore")

    fire_rate: float = Field(
        5000.0, gt=0, description="most timers fired per second per partition (storm protection)"
    )
    fire_burst: float = Field(
        0.1, gt=0, description="seconds of fire_rate a partition may fire at once after idling"
    )
    fire_batch: int = Field(2000, ge=1, description="most timers produced per partition per round")
    fire_inflight: int = Field(
        4, ge=1, description="fire rounds awaiting their acknowledgements at once"
    )
    arm_batch: int = Field(2000, ge=1, description="most `timers` messages handled per batch")
    arm_within: float = Field(0.005, gt=0, description="seconds to wait to fill an arm batch")
    idle_tick: float = Field(1.0, gt=0, description="longest sleep of the fire loop")
    backlog_cap: int = Field(
        20_000, ge=0, description="count at most this many due timers for the backlog gauge"
    )
    schedule_tick: float = Field(0.25, gt=0, description="how often schedules are evaluated (s)")
    schedule_probe: bool = Field(
        True,
        description="ask the query API (HEADRACE_API_URL) whether a schedule's last run still "
        "runs, for the skip and buffer_one overlap policies",
    )
