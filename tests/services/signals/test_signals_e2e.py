"""End to end: runs wait for signals through the signal service.

Orchestrator, timer service and signal service run as subprocesses against the
real broker, the responder answers tasks at once. One platform serves the
whole module; every test uses its own runs and correlation keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from procs import ServiceProcess
from signals_kit import (
    SignalsProcess,
    deploy_all,
    events,
    of_type,
    output,
    send,
    start_run,
    until,
    waiting,
)

from headrace.core.envelope import EventType
from headrace.services.responder import Responder
from headrace.settings import Settings
from headrace.topic_admin import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Live:
    settings: Settings
    signals: SignalsProcess


@pytest.fixture(scope="module")
def live(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:8]}.")
    ensure_topics(settings)
    deploy_all(settings)
    root: Path = tmp_path_factory.mktemp("signals-e2e")
    procs: list[ServiceProcess] = [
        ServiceProcess(
            name,
            ["-m", "headrace", "serve", name, "--web-port", "0"],
            settings,
            root / name,
        ).start()
        for name in ("orchestrator", "timers")
    ]
    signals = SignalsProcess(settings, root / "signals").start()
    procs.append(signals)
    responder = Responder(settings).start()
    try:
        signals.wait_ready()
        yield Live(settings, signals)
    finally:
        responder.stop()
        for p in procs:
            p.stop(30)


def tag() -> str:
    return uuid.uuid4().hex[:8]


def test_a_signal_to_a_correlation_key_before_any_run_waits_is_delivered_when_one_does(
    live: Live,
) -> None:
    s, key = live.settings, f"order-{tag()}"
    send(s, f"sig-{key}", {"paid": 42}, correlation=key)
    until(lambda: live.signals.metric("headrace_signals_buffered_total") >= 1, "a buffered signal")
    run = start_run(s, "waiter", f"w-{key}", {"key": key})
    assert output(s, run)["got"] == {"paid": 42}
    (received,) = of_type(events(s, *run), EventType.SignalReceived)
    assert received.payload["signal_id"] == f"sig-{key}"
    assert received.payload["correlation"] == key


def test_a_signal_to_a_run_before_it_waits_is_delivered_when_it_does(live: Live) -> None:
    s, t = live.settings, tag()
    # a run without a correlation key waits on its run id
    send(s, f"sig-plain-{t}", "hello", run_id=f"plain-{t}")
    plain = start_run(s, "plain", f"plain-{t}", {})
    # a run waiting on a correlation key still takes signals addressed to it
    send(s, f"sig-keyed-{t}", "by run id", run_id=f"keyed-{t}")
    keyed = start_run(s, "waiter", f"keyed-{t}", {"key": f"other-{t}"})
    assert output(s, plain)["got"] == "hello"
    assert output(s, keyed)["got"] == "by run id"


def test_every_run_waiting_on_a_correlation_key_receives_the_signal(live: Live) -> None:
    s, key = live.settings, f"batch-{tag()}"
    runs = [start_run(s, "waiter", f"{key}-{i}", {"key": key}) for i in range(2)]
    for run in runs:
        waiting(s, run)
    # another tenant waiting on the same key is not reached: keys are per tenant
    other = start_run(s, "impatient", f"{key}-x", {"key": key}, tenant="globex")
    send(s, f"sig-{key}", {"go": True}, correlation=key)
    for run in runs:
        assert output(s, run)["got"] == {"go": True}
    assert output(s, other)["gave_up"] == "timed out"


def test_buffered_signals_reach_consecutive_waits_in_the_order_they_arrived(live: Live) -> None:
    s, key = live.settings, f"seq-{tag()}"
    for i in range(3):
        send(s, f"sig-{key}-{i}", i, correlation=key)
    run = start_run(s, "thrice", f"thrice-{key}", {"key": key})
    out = output(s, run)
    assert (out["a"], out["b"], out["c"]) == (0, 1, 2)


def test_a_signal_sent_twice_is_delivered_once(live: Live) -> None:
    s, key = live.settings, f"dup-{tag()}"
    send(s, f"sig-{key}", "once", correlation=key)
    send(s, f"sig-{key}", "once", correlation=key)  # a producer's retry: the same id
    first = start_run(s, "waiter", f"{key}-1", {"key": key})
    assert output(s, first)["got"] == "once"
    second = start_run(s, "impatient", f"{key}-2", {"key": key})
    assert output(s, second)["gave_up"] == "timed out"
    assert not of_type(events(s, *second), EventType.SignalReceived)


def test_a_timed_out_wait_takes_its_on_timeout_path_and_a_late_signal_waits_for_the_next_wait(
    live: Live,
) -> None:
    s, t = live.settings, tag()
    # the first wait times out; the signal, sent late, reaches the second wait
    patient = start_run(s, "patient", f"patient-{t}", {"key": f"p-{t}"})
    until(
        lambda: of_type(events(s, *patient), EventType.SignalTimedOut),
        "the first wait to time out",
    )
    send(s, f"late-{t}", "late", correlation=f"p-{t}")
    out = output(s, patient)
    assert "first" not in out and out["again"] == "late"
    # a run that gave up and ended takes nothing: the late signal is kept for a later waiter
    gone = start_run(s, "impatient", f"gone-{t}", {"key": f"g-{t}"})
    assert output(s, gone)["gave_up"] == "timed out"
    before = live.signals.metric("headrace_signals_buffered_total")
    send(s, f"too-late-{t}", "too late", correlation=f"g-{t}")
    until(
        lambda: live.signals.metric("headrace_signals_buffered_total") > before,
        "the late signal to be buffered",
    )
    assert not of_type(events(s, *gone), EventType.SignalReceived)
    later = start_run(s, "waiter", f"later-{t}", {"key": f"g-{t}"})
    assert output(s, later)["got"] == "too late"
