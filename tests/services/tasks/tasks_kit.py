"""Helpers for the task service's integration tests: the stack, raw workers, runs, the DLQ."""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procs import ServiceProcess
from support import wait_for

from headrace.core.dsl.load import load_definition
from headrace.core.envelope import Command, CommandType, Event, EventType
from headrace.core.outbox import command_message
from headrace.definitions import deploy
from headrace.dev import free_port_block
from headrace.errors import HeadraceError
from headrace.history import read_run
from headrace.kafka import flush, make_producer
from headrace.services.tasks.dlq import Entry, read_entries
from headrace.settings import Settings

RAW_WORKER = Path(__file__).with_name("raw_worker.py")
TENANT = "acme"


class Service(ServiceProcess):
    """``python -m headrace serve <name>`` with a metrics port of its own."""

    def __init__(self, name: str, settings: Settings, workdir: Path, env: dict[str, str] | None):
        self.port = free_port_block(1)
        argv = ["-m", "headrace", "serve", name, "--web-port", str(self.port)]
        super().__init__(name, argv, settings, workdir, env)

    def metrics(self) -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read()
        out: dict[str, float] = {}
        for line in text.decode().splitlines():
            m = re.match(r"^(headrace_\w+(?:\{[^}]*\})?) (\S+)$", line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out

    def metric_sum(self, prefix: str) -> float:
        """Sum of every series whose name (labels included) starts with ``prefix``."""
        return sum(v for k, v in self.metrics().items() if k.startswith(prefix))


class RawWorker(ServiceProcess):
    """A worker process that speaks the protocol without headrace (raw_worker.py)."""

    def __init__(self, name: str, settings: Settings, workdir: Path, queue: str, ledger: Path):
        argv = [
            str(RAW_WORKER),
            "--bootstrap",
            settings.bootstrap,
            "--prefix",
            settings.topic_prefix,
            "--queue",
            queue,
            "--name",
            name,
            "--ledger",
            str(ledger),
        ]
        super().__init__(name, argv, settings, workdir)
        self.argv = [sys.executable, *argv]


@dataclass
class Stack:
    """Orchestrator, timer service, task service and raw workers of one test."""

    settings: Settings
    workdir: Path
    ledger: Path
    services: dict[str, Service] = field(default_factory=dict)
    workers: dict[str, RawWorker] = field(default_factory=dict)

    def start(self, *names: str, env: dict[str, str] | None = None) -> Stack:
        for name in names or ("orchestrator", "timers", "tasks"):
            proc = self.services.get(name)
            if proc is None:
                proc = self.services[name] = Service(name, self.settings, self.workdir / name, env)
            proc.start()
        return self

    @property
    def tasks(self) -> Service:
        return self.services["tasks"]

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until the task service watches every partition (its table recovered)."""

        def ready() -> bool:
            assert self.tasks.alive, f"task service exited:\n{self.tasks.log_tail()}"
            value = self.tasks.metrics().get("headrace_tasks_active_partitions", 0)
            return value == self.settings.partitions

        wait_for(ready, timeout, "the task service to own every partition")

    def worker(self, name: str, queue: str = "work") -> RawWorker:
        proc = self.workers.get(name)
        if proc is None:
            proc = self.workers[name] = RawWorker(
                name, self.settings, self.workdir / name, queue, self.ledger
            )
        return proc.start()

    def stop(self) -> None:
        for proc in [*self.workers.values(), *self.services.values()]:
            proc.stop(30)

    # -- the ledger of deliveries -------------------------------------------------

    def deliveries(self, event: str = "delivery") -> list[dict[str, Any]]:
        if not self.ledger.exists():
            return []
        lines = self.ledger.read_text().splitlines()
        return [d for d in map(json.loads, lines) if d["event"] == event]

    def deliveries_per_key(self) -> Counter[str]:
        return Counter(d["idempotency_key"] for d in self.deliveries())


def deploy_yaml(settings: Settings, text: str) -> None:
    deploy(settings, [(load_definition(text, "test.yaml"), text)])


def send(settings: Settings, commands: list[Command]) -> None:
    producer = make_producer(settings, "test-tasks")
    for c in commands:
        m = command_message(c, settings.routing)
        producer.produce(m.topic, m.value, m.key, partition=m.partition)
    flush(producer)


def start_run(settings: Settings, workflow: str, run_id: str, run_input: Any) -> str:
    start_runs(settings, workflow, {run_id: run_input})
    return run_id


def start_runs(settings: Settings, workflow: str, runs: dict[str, Any]) -> list[str]:
    """Start runs ``{run_id: input}`` of ``workflow`` with one producer."""
    now = int(time.time() * 1000)
    commands = [
        Command(
            f"start-{run_id}",
            TENANT,
            run_id,
            CommandType.StartRun,
            now,
            {"workflow": workflow, "version": None, "input": run_input},
        )
        for run_id, run_input in runs.items()
    ]
    send(settings, commands)
    return list(runs)


def events(settings: Settings, run_id: str) -> list[Event]:
    """The run's events, redeliveries collapsed (empty while it has none)."""
    try:
        log = read_run(settings, TENANT, run_id)
    except HeadraceError:
        return []
    return [r.event for r in log.distinct() if r.event is not None]


def types(evs: list[Event]) -> list[str]:
    return [e.type.value for e in evs]


def wait_status(settings: Settings, run_id: str, status: str, timeout: float = 90.0) -> list[Event]:
    """Until the run ends with ``status`` (fails at once if it ends otherwise)."""
    ends = {
        EventType.RunCompleted: "completed",
        EventType.RunFailed: "failed",
        EventType.RunCancelled: "cancelled",
        EventType.RunTerminated: "terminated",
    }

    def ended() -> list[Event] | None:
        evs = events(settings, run_id)
        for e in evs:
            if e.type in ends:
                assert ends[e.type] == status, f"run {run_id} {ends[e.type]}: {types(evs)}"
                return evs
        return None

    found = wait_for(ended, timeout, f"run {run_id} to be {status}")
    assert found is not None
    return found


def wait_event(
    settings: Settings, run_id: str, type_: EventType, count: int = 1, timeout: float = 90.0
) -> list[Event]:
    def seen() -> list[Event] | None:
        evs = events(settings, run_id)
        return evs if sum(1 for e in evs if e.type is type_) >= count else None

    found = wait_for(seen, timeout, f"{count} {type_.value} in run {run_id}")
    assert found is not None
    return found


def dlq_entries(settings: Settings, queue: str) -> dict[str, Entry]:
    """The entries of the queue's DLQ, every partition (empty while it does not exist)."""
    try:
        return read_entries(settings, queue)
    except Exception:
        return {}
