"""Fixtures and helpers for the query API and control-operation tests.

Every service runs as a real child process against the real broker: the
orchestrator, the ingress router and the query API (``ServiceProcess``), so a
``kill -9`` is real; the task responder runs in-process. Conftests import the
fixtures from here (``from control_kit import *``).
"""

from __future__ import annotations

import re
import shutil
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import ServiceProcess
from support import wait_for
from typer.testing import CliRunner

from headrace.cli.main import app as cli_app
from headrace.core.dsl.load import load_definition
from headrace.core.envelope import Command, CommandType, EventType
from headrace.core.outbox import command_message
from headrace.definitions import deploy
from headrace.dev import free_port_block
from headrace.errors import HeadraceError
from headrace.history import read_run
from headrace.kafka import flush, make_producer
from headrace.services.api.client import ApiClient
from headrace.services.responder import Responder, answer
from headrace.settings import Settings
from headrace.streams.partition_reader import read_partition
from headrace.topic_admin import ensure_topics

TENANT = "acme"


class Service(ServiceProcess):
    """A headrace service process with an HTTP port of its own (metrics or the API)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        settings: Settings,
        workdir: Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port_block(1)
        super().__init__(
            name, [a.replace("{port}", str(self.port)) for a in argv], settings, workdir, env
        )

    def metrics(self) -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read()
        out: dict[str, float] = {}
        for line in text.decode().splitlines():
            m = re.match(r"^(headrace_\w+(?:\{[^}]*\})?) (\S+)$", line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out

    def wait_metric(self, name: str, value: float, timeout: float = 60.0) -> None:
        wait_for(lambda: self.metrics().get(name) == value, timeout, f"{self.name} {name}={value}")


class ApiProcess(Service):
    """``headrace serve api`` on a free port, with a client bound to it."""

    def __init__(self, settings: Settings, workdir: Path, instance: str = "0") -> None:
        argv = ["-m", "headrace", "serve", "api", "--port", "{port}", "--instance", instance]
        super().__init__(f"api-{instance}", argv, settings, workdir)
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = workdir / "data" / f"api-{instance}"

    def client(self) -> ApiClient:
        return ApiClient(self.url, timeout=30)

    def start(self, extra_env: dict[str, str] | None = None) -> ApiProcess:
        """Start and return once it answers /healthz."""
        super().start(extra_env)
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 60.0) -> None:
        def healthy() -> bool:
            with self.client() as c:
                return c.get("/healthz")["status"] == "ok"

        wait_for(healthy, timeout, f"{self.name} to answer /healthz")

    def wipe(self) -> None:
        assert not self.alive, "stop the api before wiping its data"
        shutil.rmtree(self.data, ignore_errors=True)


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def platform(settings: Settings) -> Settings:
    """Every topic created under this test's prefix."""
    ensure_topics(settings)
    return settings


@pytest.fixture
def orchestrator(platform: Settings, tmp_path: Path) -> Iterator[Service]:
    """One orchestrator worker (not started), with /metrics on a port of its own."""
    proc = Service(
        "orchestrator",
        ["-m", "headrace", "serve", "orchestrator", "--instance", "a", "--web-port", "{port}"],
        platform,
        tmp_path / "orchestrator",
    )
    yield proc
    proc.stop(30)


@pytest.fixture
def router(platform: Settings, tmp_path: Path) -> Iterator[Service]:
    proc = Service(
        "router",
        ["-m", "headrace", "serve", "router", "--web-port", "{port}"],
        platform,
        tmp_path / "router",
    )
    yield proc
    proc.stop(30)


@pytest.fixture
def api(platform: Settings, tmp_path: Path) -> Iterator[ApiProcess]:
    """The query API (not started)."""
    proc = ApiProcess(platform, tmp_path / "api")
    yield proc
    proc.stop(30)


@pytest.fixture
def responder(platform: Settings) -> Iterator[Responder]:
    r = Responder(platform).start()
    yield r
    r.stop()


# -- helpers -------------------------------------------------------------------------------


def deploy_yaml(settings: Settings, *texts: str) -> None:
    deploy(settings, [(load_definition(t, "test.yaml"), t) for t in texts])


def start_run(
    settings: Settings,
    workflow: str,
    run_id: str | None = None,
    *,
    tenant: str = TENANT,
    input: Any = None,
) -> str:
    """Produce a StartRun command straight to ``commands``; returns the run id."""
    run_id = run_id or f"r-{uuid.uuid4().hex[:8]}"
    command = Command(
        f"start-{run_id}",
        tenant,
        run_id,
        CommandType.StartRun,
        int(time.time() * 1000),
        {"workflow": workflow, "version": None, "input": input if input is not None else {}},
    )
    send(settings, command)
    return run_id


def send(settings: Settings, *commands: Command) -> None:
    producer = make_producer(settings, "test-commands")
    for c in commands:
        m = command_message(c, settings.routing)
        producer.produce(m.topic, m.value, m.key, partition=m.partition)
    flush(producer)


def history(settings: Settings, run_id: str, tenant: str = TENANT) -> list[Any]:
    """The run's distinct events (empty list while it has none)."""
    try:
        log = read_run(settings, tenant, run_id)
    except HeadraceError:
        return []
    return [r.event for r in log.distinct() if r.event is not None]


def types(events: list[Any]) -> list[str]:
    return [e.type.value for e in events]


def wait_event(
    settings: Settings,
    run_id: str,
    kind: EventType,
    timeout: float = 60.0,
    tenant: str = TENANT,
    where: Callable[[Any], bool] = lambda e: True,
) -> list[Any]:
    """Wait until the run's history has an event of ``kind`` (matching ``where``)."""
    return wait_for(
        lambda: (
            (h := history(settings, run_id, tenant))
            and any(e.type is kind and where(e) for e in h)
            and h
        ),
        timeout,
        f"{kind.value} in {tenant}/{run_id}",
    )


def task_requests(settings: Settings, run_id: str, step: str) -> list[dict[str, Any]]:
    """The ``schedule`` requests for ``step`` of ``run_id`` on ``task-requests``."""
    import json

    out = []
    for p in range(settings.partitions):
        for rec in read_partition(settings.bootstrap, settings.topics.task_requests, p):
            if rec.value is None:
                continue
            body = json.loads(rec.value)
            if body.get("op") == "schedule" and body["run_id"] == run_id and body["step"] == step:
                out.append(body)
    return out


def complete_task(settings: Settings, request: dict[str, Any]) -> None:
    """Answer one task request as the responder would."""
    command = answer(request, frozenset(), int(time.time() * 1000))
    assert command is not None
    send(settings, command)


def dead_letters(settings: Settings) -> list[Any]:
    return list(read_partition(settings.bootstrap, settings.topics.dlq, 0, 0))


def cli(settings: Settings, api: ApiProcess | None, *args: str) -> Any:
    """Run the ``headrace`` CLI in-process against this test's broker, prefix and API."""
    env = {
        "HEADRACE_BOOTSTRAP": settings.bootstrap,
        "HEADRACE_TOPIC_PREFIX": settings.topic_prefix,
        "HEADRACE_PARTITIONS": str(settings.partitions),
        "HEADRACE_API_URL": api.url if api is not None else "http://127.0.0.1:9",
        "COLUMNS": "200",
    }
    return CliRunner().invoke(cli_app, list(args), env=env, catch_exceptions=False)


__all__ = [
    "TENANT",
    "ApiProcess",
    "Service",
    "api",
    "cli",
    "complete_task",
    "dead_letters",
    "deploy_yaml",
    "history",
    "orchestrator",
    "platform",
    "responder",
    "router",
    "send",
    "start_run",
    "task_requests",
    "types",
    "wait_event",
]
