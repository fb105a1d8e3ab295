"""Helpers for the signal service's integration tests: run the platform, start runs, signal them."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procs import ServiceProcess
from support import wait_for

from headrace.core.codec import decode_event
from headrace.core.dsl.load import load_definition
from headrace.core.envelope import Command, CommandType, Event, EventType
from headrace.core.outbox import command_message, signal_body, signal_message
from headrace.definitions import deploy
from headrace.dev import free_port_block
from headrace.history import TERMINAL
from headrace.kafka import flush, make_producer
from headrace.settings import Settings
from headrace.streams.partition_reader import read_partition

WORKFLOWS = {
    # waits for `go` on the correlation key in its input, after an instant task
    "waiter": """
type: waiter
version: 1
steps:
  - {name: prepare, kind: task, queue: work, timeouts: {start_to_close: 30s}}
  - {name: wait-go, kind: wait_signal, signal: go, correlation: $input.key, into: got}
""",
    # waits on its own run id (no correlation)
    "plain": """
type: plain
version: 1
steps:
  - {name: wait-go, kind: wait_signal, signal: go, into: got}
""",
    # three waits in a row on one key
    "thrice": """
type: thrice
version: 1
steps:
  - {name: w1, kind: wait_signal, signal: go, correlation: $input.key, into: a}
  - {name: w2, kind: wait_signal, signal: go, correlation: $input.key, into: b}
  - {name: w3, kind: wait_signal, signal: go, correlation: $input.key, into: c}
""",
    # gives up after a moment, then waits once more without a deadline
    "patient": """
type: patient
version: 1
steps:
  - name: first
    kind: wait_signal
    signal: go
    correlation: $input.key
    timeout: 1s
    on_timeout: again
    into: first
  - {name: again, kind: wait_signal, signal: go, correlation: $input.key, into: again}
""",
    # gives up after a moment and ends
    "impatient": """
type: impatient
version: 1
steps:
  - name: only
    kind: wait_signal
    signal: go
    correlation: $input.key
    timeout: 1s
    on_timeout: gave-up
    into: got
  - {name: done, kind: succeed}
  - {name: gave-up, kind: set, value: '"timed out"', into: gave_up}
""",
}


class SignalsProcess(ServiceProcess):
    """``python -m headrace serve signals`` with its own metrics port."""

    def __init__(
        self,
        settings: Settings,
        workdir: Path,
        env: dict[str, str] | None = None,
        instance: str = "0",
    ) -> None:
        self.port = free_port_block(1)
        argv = ["serve", "signals", "--instance", instance, "--web-port", str(self.port)]
        super().__init__(f"signals-{instance}", ["-m", "headrace", *argv], settings, workdir, env)
        self.partitions = settings.partitions

    def metrics(self) -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read()
        out: dict[str, float] = {}
        for line in text.decode().splitlines():
            m = re.match(r"^(headrace_\w+(?:\{[^}]*\})?) (\S+)$", line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out

    def metric(self, name: str) -> float:
        return self.metrics().get(name, 0.0)

    def wait_ready(self, timeout: float = 90.0) -> SignalsProcess:
        def ready() -> bool:
            assert self.alive, f"signal service exited:\n{self.log_tail()}"
            return self.metric("headrace_signals_active_partitions") == self.partitions

        wait_for(ready, timeout, "the signal service to own every partition")
        return self


def deploy_all(settings: Settings) -> None:
    deploy(settings, [(load_definition(text, f"{n}.yaml"), text) for n, text in WORKFLOWS.items()])


def start_run(
    settings: Settings, workflow: str, run_id: str, input_: Any, tenant: str = "acme"
) -> tuple[str, str]:
    command = Command(
        f"start-{run_id}",
        tenant,
        run_id,
        CommandType.StartRun,
        int(time.time() * 1000),
        {"workflow": workflow, "version": None, "input": input_},
    )
    m = command_message(command, settings.routing)
    producer = make_producer(settings, "test-starter")
    producer.produce(m.topic, m.value, m.key, partition=m.partition)
    flush(producer)
    return tenant, run_id


def send(
    settings: Settings,
    signal_id: str,
    data: Any,
    *,
    tenant: str = "acme",
    run_id: str | None = None,
    correlation: str | None = None,
    name: str = "go",
) -> None:
    """A signal written exactly as the router writes one (the shared encoder)."""
    body = signal_body(
        signal_id=signal_id,
        signal=name,
        tenant=tenant,
        data=data,
        time=int(time.time() * 1000),
        run_id=run_id,
        correlation=correlation,
    )
    m = signal_message(body, settings.routing)
    producer = make_producer(settings, "test-signaller")
    producer.produce(m.topic, m.value, m.key, partition=m.partition, headers=m.headers)
    flush(producer)


def events(settings: Settings, tenant: str, run_id: str) -> list[Event]:
    """The run's events, redeliveries collapsed, in seq order."""
    p = settings.routing.partition(tenant, run_id)
    key = f"{tenant}/{run_id}".encode()
    by_seq: dict[int, Event] = {}
    for rec in read_partition(settings.bootstrap, settings.topics.events, p, 0):
        if rec.key == key and rec.value is not None:
            ev = decode_event(rec.value)
            by_seq.setdefault(ev.seq, ev)
    return [by_seq[s] for s in sorted(by_seq)]


def of_type(evs: list[Event], type_: EventType) -> list[Event]:
    return [e for e in evs if e.type is type_]


def ended(settings: Settings, run: tuple[str, str], timeout: float = 90.0) -> Event:
    """Wait until the run ends; its terminal event."""

    def terminal() -> Event | None:
        for ev in events(settings, *run):
            if ev.type in TERMINAL:
                return ev
        return None

    ev: Event = wait_for(terminal, timeout, f"run {run[0]}/{run[1]} to end")
    return ev


def output(settings: Settings, run: tuple[str, str], timeout: float = 90.0) -> Any:
    ev = ended(settings, run, timeout)
    assert ev.type is EventType.RunCompleted, f"{run} ended with {ev.type}: {ev.payload}"
    return ev.payload.get("output")


def waiting(
    settings: Settings, run: tuple[str, str], waits: int = 1, timeout: float = 60.0
) -> None:
    """Until the run has begun ``waits`` signal waits."""
    wait_for(
        lambda: len(of_type(events(settings, *run), EventType.SignalAwaited)) >= waits,
        timeout,
        f"run {run[1]} to wait for a signal",
    )


def until(cond: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    return wait_for(cond, timeout, what)


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
