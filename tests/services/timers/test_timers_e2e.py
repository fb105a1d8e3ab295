"""End to end: workflows whose waits, retries' backoff and schedules run on the timer service.

Orchestrator, ingress router and timer service run as subprocesses against the
real broker; a workflow waits, and a schedule starts runs of it through
``ingress``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from procs import ServiceProcess
from support import wait_for
from timers_kit import TimersProcess, now_ms

from headrace.audit import audit_events
from headrace.core.codec import decode_event
from headrace.core.dsl.load import load_definition
from headrace.core.envelope import Command, CommandType, EventType
from headrace.core.outbox import command_message
from headrace.definitions import deploy
from headrace.kafka import flush, make_producer
from headrace.services.responder import Responder
from headrace.services.timers.schedules import new_schedule, publish_schedule
from headrace.settings import Settings
from headrace.streams.partition_reader import read_partition

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAITER = """
type: waiter
version: 1
steps:
  - {name: pause, kind: wait, duration: 2s}
"""


@pytest.fixture
def platform_procs(
    platform: Settings, tmp_path: Path
) -> Iterator[Callable[[str, list[str]], ServiceProcess]]:
    made: list[ServiceProcess] = []

    def make(name: str, argv: list[str]) -> ServiceProcess:
        proc = ServiceProcess(name, ["-m", "headrace", *argv], platform, tmp_path / name)
        made.append(proc)
        return proc.start()

    yield make
    for proc in made:
        proc.stop(30)


def _events(settings: Settings) -> list:
    out = []
    for p in range(settings.partitions):
        for rec in read_partition(settings.bootstrap, settings.topics.events, p, 0):
            out.append(decode_event(rec.value))
    return out


def test_waits_and_schedules_run_on_the_timer_service(
    platform: Settings,
    timers: Callable[..., TimersProcess],
    platform_procs: Callable[[str, list[str]], ServiceProcess],
) -> None:
    deploy(platform, [(load_definition(WAITER, "waiter.yaml"), WAITER)])
    platform_procs("orchestrator", ["serve", "orchestrator", "--web-port", "0"])
    platform_procs("router", ["serve", "router", "--web-port", "0"])
    svc = timers().start()
    svc.wait_ready()
    producer = make_producer(platform)
    started = now_ms()
    for i in range(5):
        cmd = Command(
            f"start-{i}",
            "acme",
            f"w{i}",
            CommandType.StartRun,
            started,
            {"workflow": "waiter", "version": None, "input": {}},
        )
        m = command_message(cmd, platform.routing)
        producer.produce(m.topic, m.value, m.key, partition=m.partition)
    flush(producer)
    publish_schedule(
        platform,
        new_schedule(
            {
                "name": "every3",
                "workflow": "waiter",
                "cron": "*/3 * * * * *",
                "tenant": "acme",
                "overlap": "allow",
            }
        ),
    )

    def done() -> bool:
        report = audit_events(platform)
        statuses = {k: r.status for k, r in report.runs.items()}
        direct = [statuses.get(f"acme/w{i}") for i in range(5)]
        scheduled = [
            k for k, s in statuses.items() if k.startswith("acme/every3-") and s == "completed"
        ]
        return direct == ["completed"] * 5 and len(scheduled) >= 2

    wait_for(done, 120, "5 started and 2 scheduled runs of `waiter` to complete")
    report = audit_events(platform)
    assert not report.broken
    fired = [e for e in _events(platform) if e.type is EventType.TimerFired]
    armed = {e.payload["timer_id"]: e for e in _events(platform) if e.type is EventType.TimerArmed}
    for e in fired:
        assert e.time >= armed[e.payload["timer_id"]].payload["due"]
    print(f"\n{len(fired)} timers fired end to end", file=sys.stderr)


FLAKY = """
type: flaky
version: 1
steps:
  - name: call
    kind: task
    queue: bad
    timeouts: {start_to_close: 30s}
    retry: {max_attempts: 3, initial_backoff: 500ms, multiplier: 2, jitter: 0}
"""


def test_retry_backoff_runs_on_the_timer_service(
    platform: Settings,
    timers: Callable[..., TimersProcess],
    platform_procs: Callable[[str, list[str]], ServiceProcess],
) -> None:
    deploy(platform, [(load_definition(FLAKY, "flaky.yaml"), FLAKY)])
    platform_procs("orchestrator", ["serve", "orchestrator", "--web-port", "0"])
    svc = timers().start()
    svc.wait_ready()
    responder = Responder(platform, fail_queues=frozenset({"bad"})).start()
    try:
        producer = make_producer(platform)
        cmd = Command(
            "start-f",
            "acme",
            "f1",
            CommandType.StartRun,
            now_ms(),
            {"workflow": "flaky", "version": None, "input": {}},
        )
        m = command_message(cmd, platform.routing)
        producer.produce(m.topic, m.value, m.key, partition=m.partition)
        flush(producer)
        wait_for(
            lambda: (
                audit_events(platform).runs.get("acme/f1") is not None
                and audit_events(platform).runs["acme/f1"].status == "failed"
            ),
            90,
            "the run to fail after three attempts",
        )
    finally:
        responder.stop()
    events = [e for e in _events(platform) if e.run_id == "f1"]
    retries = [
        e for e in events if e.type is EventType.TimerFired and e.payload["purpose"] == "retry"
    ]
    assert len(retries) == 2
    assert svc.metric("headrace_timers_fired_total") == 2
