"""Broadcast: one signal reaches exactly the runs of a type (and tenant, and filter).

The signal service finds the runs through the query API (``headrace serve
api``, run here as a subprocess like the others), two to a page so that its
paging is exercised too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from control_kit import ApiProcess
from procs import ServiceProcess
from signals_kit import SignalsProcess, events, of_type, output, send, start_run, until, waiting

from headrace.core.envelope import EventType
from headrace.core.outbox import broadcast_body, signal_message
from headrace.kafka import flush, make_producer
from headrace.services.responder import Responder
from headrace.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def api(platform: Settings, tmp_path: Path) -> Iterator[ApiProcess]:
    proc = ApiProcess(platform, tmp_path / "api")
    yield proc
    proc.stop(30)


def broadcast(settings: Settings, signal_id: str, data: Any, **kw: Any) -> None:
    body = broadcast_body(signal_id=signal_id, signal="go", data=data, time=0, **kw)
    m = signal_message(body, settings.routing)
    producer = make_producer(settings, "test-broadcaster")
    producer.produce(m.topic, m.value, m.key, partition=m.partition, headers=m.headers)
    flush(producer)


def test_a_broadcast_reaches_exactly_the_live_runs_of_its_type_tenant_and_filter(
    platform: Settings,
    services: Callable[..., ServiceProcess],
    responder: Responder,
    api: ApiProcess,
) -> None:
    s = platform
    services("orchestrator")
    api.start()
    env = {"HEADRACE_API_URL": api.url, "HEADRACE_SIGNAL_BROADCAST_PAGE": "2"}
    svc = services("signals", env)
    assert isinstance(svc, SignalsProcess)
    svc.wait_ready()
    # (tenant, run, type, region)
    runs = [
        ("acme", "a1", "plain", "eu"),
        ("acme", "a2", "plain", "eu"),  # suspended: records the signal, ends on resume
        ("acme", "a3", "plain", "us"),  # filtered out
        ("acme", "a4", "plain", "eu"),
        ("acme", "a5", "plain", "eu"),
        ("globex", "g1", "plain", "eu"),  # another tenant
        ("acme", "w1", "waiter", "eu"),  # another type
    ]
    started = {}
    for tenant, run_id, type_, region in runs:
        input_ = {"region": region, "key": f"k-{run_id}"}
        started[run_id] = start_run(s, type_, run_id, input_, tenant=tenant)
    for run in started.values():
        waiting(s, run)
    with api.client() as client:
        client.control("suspend", "acme", "a2", reason="broadcast test")
    until(lambda: of_type(events(s, *started["a2"]), EventType.RunSuspended), "a2 suspended")
    broadcast(
        s,
        "bc-1",
        {"recall": True},
        workflow_type="plain",
        tenant="acme",
        filter_expr='.region == "eu"',
    )
    for run_id in ("a1", "a4", "a5"):
        assert output(s, started[run_id])["got"] == {"recall": True}
    # a2 is suspended: it records the signal, and completes only once resumed
    until(lambda: of_type(events(s, *started["a2"]), EventType.SignalReceived), "a2's signal")
    assert not of_type(events(s, *started["a2"]), EventType.RunCompleted)
    with api.client() as client:
        client.control("resume", "acme", "a2", reason="broadcast test")
    assert output(s, started["a2"])["got"] == {"recall": True}
    assert svc.metric("headrace_signals_broadcast_targets_total") == 4
    # every other run is still waiting: a signal sent to it now is the first it receives
    for run_id in ("a3", "g1"):
        send(s, f"direct-{run_id}", "direct", tenant=started[run_id][0], run_id=run_id)
        assert output(s, started[run_id])["got"] == "direct"
    send(s, "direct-w1", "direct", correlation="k-w1")
    assert output(s, started["w1"])["got"] == "direct"
    for run_id in ("a3", "g1", "w1"):
        (got,) = of_type(events(s, *started[run_id]), EventType.SignalReceived)
        assert got.payload["signal_id"] == f"direct-{run_id}"


def test_a_broadcast_the_api_cannot_serve_goes_to_the_dlq_with_the_reason(
    platform: Settings, services: Callable[..., ServiceProcess]
) -> None:
    from headrace.streams.partition_reader import read_partition

    svc = services(
        "signals",
        {"HEADRACE_API_URL": "http://127.0.0.1:9", "HEADRACE_SIGNAL_BROADCAST_GIVE_UP": "1s"},
    )
    assert isinstance(svc, SignalsProcess)
    svc.wait_ready()
    broadcast(platform, "bc-x", None, workflow_type="plain")

    def dead() -> list[Any]:
        return list(read_partition(platform.bootstrap, platform.topics.dlq, 0, 0))

    (rec,) = until(dead, "the broadcast in the DLQ")
    headers = dict(rec.headers)
    assert headers["headrace-error-code"] == b"HR-API-001"
    assert b"did not answer" in headers["headrace-error"]
    assert json.loads(rec.value)["signal_id"] == "bc-x"
