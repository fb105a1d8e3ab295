"""Settings of the query API and of its clients: ``HEADRACE_API_*`` in the environment."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    """Where the API listens and where clients (CLI, services) find it."""

    model_config = SettingsConfigDict(env_prefix="HEADRACE_API_", extra="ignore")

    url: str = Field("http://127.0.0.1:8080", description="base URL clients use")
    host: str = Field("127.0.0.1", description="address `headrace serve api` binds")
    port: int = Field(8080, ge=1, le=65535, description="port `headrace serve api` binds")
    wait_max: float = Field(
        60.0, gt=0, description="longest a read may wait for consistency (seconds)"
    )
    batch: int = Field(2000, ge=1, description="most events folded per write")
