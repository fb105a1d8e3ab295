"""Settings of the signal service: ``HEADRACE_SIGNAL_*`` in the environment."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from headrace.core.durations import parse_duration


def _ms(value: object) -> object:
    """Durations are written like the DSL's (``7d``, ``90s``, ``250ms``); plain numbers are ms."""
    if isinstance(value, str) and not value.strip().isdigit():
        return parse_duration(value.strip())
    return value


class SignalSettings(BaseSettings):
    """Tuning of one signal-service worker (the platform settings come from ``Settings``)."""

    model_config = SettingsConfigDict(env_prefix="HEADRACE_SIGNAL_", extra="ignore")

    buffer_ttl: int = Field(
        7 * 86_400_000, gt=0, description="how long a signal nobody waits for is kept (ms or 7d)"
    )
    dedupe_window: int = Field(
        86_400_000,
        gt=0,
        description="how long delivered signal ids and ended waits are remembered (ms or 1d)",
    )
    remembered: int = Field(
        1000, ge=1, description="most signal ids and ended waits remembered per address"
    )
    sweep_interval: int = Field(
        30_000, gt=0, description="how often expired signals are dropped (ms or 30s)"
    )
    sweep_batch: int = Field(
        1000, ge=1, description="most addresses expired per partition per sweep"
    )
    batch: int = Field(1000, ge=1, description="most `signals` messages handled per batch")
    batch_within: float = Field(0.005, gt=0, description="seconds to wait to fill a batch")
    api_url: str | None = Field(
        None,
        description="the query API that lists a broadcast's runs (default: HEADRACE_API_URL)",
    )
    broadcast_page: int = Field(500, ge=1, le=1000, description="runs asked of the API per page")
    api_timeout: float = Field(10.0, gt=0, description="seconds per API request")
    broadcast_give_up: int = Field(
        120_000,
        gt=0,
        description="how long a broadcast retries an unreachable API before the DLQ (ms or 2m)",
    )

    _v_ms = field_validator(
        "buffer_ttl", "dedupe_window", "sweep_interval", "broadcast_give_up", mode="before"
    )(classmethod(lambda cls, v: _ms(v)))
