"""Helpers for tests that run the platform: workflows, deploys, starting runs."""

from __future__ import annotations

import time
import uuid

from headrace.core.dsl.load import load_definition
from headrace.core.envelope import Command, CommandType
from headrace.core.outbox import command_message
from headrace.definitions import deploy
from headrace.kafka import flush, make_producer
from headrace.settings import Settings

SEQUENTIAL = """
type: seq{n}
version: 1
steps:
{steps}
"""


def sequential(n: int) -> str:
    """An n-step sequential workflow of instant tasks."""
    steps = "\n".join(
        f"  - {{name: s{i}, kind: task, queue: work, timeouts: {{start_to_close: 30s}}}}"
        for i in range(1, n + 1)
    )
    return SEQUENTIAL.format(n=n, steps=steps)


def deploy_yaml(settings: Settings, text: str) -> None:
    deploy(settings, [(load_definition(text, "test.yaml"), text)])


def start_runs(
    settings: Settings, workflow: str, n: int, *, tenants: int = 24, tag: str | None = None
) -> list[tuple[str, str]]:
    """Produce n StartRun commands (spread over tenants); returns (tenant, run_id) pairs."""
    tag = tag or uuid.uuid4().hex[:6]
    producer = make_producer(settings, "test-starter")
    runs = []
    now = int(time.time() * 1000)
    for i in range(n):
        tenant, run_id = f"tenant{i % tenants}", f"run-{tag}-{i}"
        command = Command(
            f"start-{tag}-{i}",
            tenant,
            run_id,
            CommandType.StartRun,
            now,
            {"workflow": workflow, "version": None, "input": {"i": i}},
        )
        m = command_message(command, settings.routing)
        producer.produce(m.topic, m.value, m.key, partition=m.partition)
        runs.append((tenant, run_id))
        if i % 1000 == 0:
            producer.poll(0)
    flush(producer)
    return runs
