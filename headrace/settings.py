"""Settings every service reads: environment ``HEADRACE_*``, then an optional file.

Precedence (highest first): explicit keyword arguments, environment variables
``HEADRACE_<FIELD>``, the YAML/JSON file named by ``HEADRACE_CONFIG``, defaults.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from headrace.errors import ErrorCode, HeadraceError
from headrace.topology import Routing, Topics


def _default_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "headrace"


class _FileSource(PydanticBaseSettingsSource):
    """Reads the file named by ``HEADRACE_CONFIG`` (YAML or JSON), if any."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        path = os.environ.get("HEADRACE_CONFIG")
        if not path:
            return
        p = Path(path)
        if not p.is_file():
            raise HeadraceError(
                ErrorCode.CONFIG_INVALID,
                f"HEADRACE_CONFIG points at {p}, which is not a file — fix the path or unset it",
            )
        text = p.read_text()
        try:
            data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise HeadraceError(ErrorCode.CONFIG_INVALID, f"{p}: cannot parse: {exc}") from exc
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise HeadraceError(ErrorCode.CONFIG_INVALID, f"{p}: top level must be a mapping")
        self._data = {str(k).lower().replace("-", "_"): v for k, v in data.items()}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


class Settings(BaseSettings):
    """Platform-wide settings. Each field is ``HEADRACE_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="HEADRACE_", extra="ignore")

    bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    topic_prefix: str = Field("headrace.", description="prefix of every topic name")
    partitions: int = Field(6, ge=1, description="partitions of each run-keyed topic")
    replication_factor: int = Field(1, ge=1, description="replication of created topics")
    min_insync_replicas: int | None = Field(None, ge=1, description="min.insync.replicas")
    tenant_spread: dict[str, int] = Field(
        default_factory=dict,
        description="partitions per tenant, e.g. 'bigco=4,acme=2' (default 1 each)",
    )
    schema_registry_url: str | None = Field(
        None, description="use Confluent wire format through this registry instead of Avro SOE"
    )
    home: Path = Field(default_factory=_default_home, description="caches, data dirs, pid files")
    data_dir: Path | None = Field(None, description="RocksDB data of this process")
    web_host: str = Field(
        "127.0.0.1",
        description="bind address of each service's /healthz and /metrics port "
        "(0.0.0.0 in containers, so probes and scrapers reach it)",
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR")
    log_format: str = Field("json", description="json or text")
    log_level_libraries: str = Field(
        "WARNING", description="log level of faust, mode and aiokafka (chatty at INFO)"
    )
    kafka_version: str = Field("4.1.1", description="Apache Kafka version `headrace dev` runs")
    kafka_port: int = Field(9092, description="first broker port of `headrace dev kafka`")

    @field_validator("tenant_spread", mode="before")
    @classmethod
    def _parse_spread(cls, v: Any) -> Any:
        if isinstance(v, str):
            out: dict[str, int] = {}
            for part in filter(None, (p.strip() for p in v.split(","))):
                name, sep, num = part.partition("=")
                if not sep or not num.strip().isdigit():
                    raise ValueError(f"tenant_spread entry {part!r} is not 'tenant=N'")
                out[name.strip()] = int(num)
            return out
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _SpreadEnv(settings_cls), _FileSource(settings_cls))

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def routing(self) -> Routing:
        return Routing(self.topics, self.partitions, dict(self.tenant_spread))

    def spread(self, tenant: str) -> int:
        return self.tenant_spread.get(tenant, 1)


class _SpreadEnv(PydanticBaseSettingsSource):
    """Environment source that leaves dict fields as strings for the validators.

    pydantic-settings would JSON-decode ``HEADRACE_TENANT_SPREAD``; we accept the
    friendlier ``bigco=4,acme=2`` too.
    """

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return os.environ.get(f"HEADRACE_{field_name.upper()}"), field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.settings_cls.model_fields:
            raw = os.environ.get(f"HEADRACE_{name.upper()}")
            if raw is None:
                continue
            if name == "tenant_spread" and raw.lstrip().startswith("{"):
                out[name] = json.loads(raw)
            else:
                out[name] = raw
        return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
