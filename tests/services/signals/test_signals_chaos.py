"""kill -9 of the signal service or of the orchestrator while runs wait and signals are kept.

Nothing may be lost: every run that was waiting, or starts waiting, takes
exactly the signal meant for it, once; every run's log verifies.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from procs import ServiceProcess
from signals_kit import SignalsProcess, events, of_type, output, send, start_run, until, waiting

from headrace.audit import audit_events
from headrace.core.envelope import EventType
from headrace.services.responder import Responder
from headrace.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _received_once(settings: Settings, runs: dict[str, tuple[str, str]]) -> None:
    """Each run completed with its own key's signal, received exactly once."""
    for key, run in runs.items():
        assert output(settings, run, 120)["got"] == {"for": key}
        assert len(of_type(events(settings, *run), EventType.SignalReceived)) == 1, run


def _audit_clean(settings: Settings) -> None:
    report = audit_events(settings)
    assert not report.broken, [str(r.report) for r in report.broken][:5]
    assert report.undecodable == 0


def test_kill_9_of_the_signal_service_loses_no_wait_and_no_buffered_signal(
    platform: Settings,
    services: Callable[..., ServiceProcess],
    responder: Responder,
    tmp_path: Path,
) -> None:
    s = platform
    services("orchestrator")
    svc = services("signals")
    assert isinstance(svc, SignalsProcess)
    svc.wait_ready()
    # runs waiting (registered) and signals nobody waits for yet (buffered)
    waiting_runs = {
        f"w{i}": start_run(s, "waiter", f"run-w{i}", {"key": f"w{i}"}) for i in range(8)
    }
    for key in (f"b{i}" for i in range(8)):
        send(s, f"sig-{key}", {"for": key}, correlation=key)
    for run in waiting_runs.values():
        waiting(s, run)
    until(lambda: svc.metric("headrace_signals_buffered_total") == 8, "eight buffered signals")
    until(
        lambda: svc.metric('headrace_signals_messages_total{op="await",outcome="applied"}') == 16,
        "every wait registered (at its key and at its run)",
    )
    svc.kill9()
    # while it is down: signals for the waiting runs, runs for the buffered signals,
    # and signals for runs that a worker on another machine will see start
    for key in waiting_runs:
        send(s, f"sig-{key}", {"for": key}, correlation=key)
    later_runs = {f"b{i}": start_run(s, "waiter", f"run-b{i}", {"key": f"b{i}"}) for i in range(8)}
    for key in (f"c{i}" for i in range(4)):
        send(s, f"sig-{key}", {"for": key}, correlation=key)
    # it dies again after its first batch's commands are acknowledged, then again
    # after its records' changelog is acknowledged but before they are written locally
    for point in ("signals-after-commands", "signals-after-changelog"):
        svc.start({"HEADRACE_CRASH_POINT": point, "HEADRACE_CRASH_PROBABILITY": "1"})
        until(lambda: not svc.alive, f"the service to crash itself at {point}", 90)
        assert f"test crash hook: SIGKILL at {point}" in svc.log_path.read_text()
    svc.start()
    _received_once(s, waiting_runs)
    _received_once(s, later_runs)
    # a worker with an empty disk (another machine) restores everything from the changelog
    svc.kill9()
    fresh = SignalsProcess(s, tmp_path / "signals-elsewhere", instance="elsewhere").start()
    try:
        fresh.wait_ready()
        elsewhere = {
            f"c{i}": start_run(s, "waiter", f"run-c{i}", {"key": f"c{i}"}) for i in range(4)
        }
        _received_once(s, elsewhere)
    finally:
        fresh.stop(30)
    _audit_clean(s)


def test_kill_9_of_the_orchestrator_loses_no_signal(
    platform: Settings, services: Callable[..., ServiceProcess], responder: Responder
) -> None:
    s = platform
    orchestrator = services("orchestrator")
    svc = services("signals")
    assert isinstance(svc, SignalsProcess)
    svc.wait_ready()
    waiting_runs = {
        f"o{i}": start_run(s, "waiter", f"run-o{i}", {"key": f"o{i}"}) for i in range(10)
    }
    for run in waiting_runs.values():
        waiting(s, run)
    orchestrator.kill9()
    # while it is down the signal service writes the deliveries to `commands`; more
    # signals are buffered and more runs asked for
    for key in waiting_runs:
        send(s, f"sig-{key}", {"for": key}, correlation=key)
    for key in (f"p{i}" for i in range(10)):
        send(s, f"sig-{key}", {"for": key}, correlation=key)
    later_runs = {f"p{i}": start_run(s, "waiter", f"run-p{i}", {"key": f"p{i}"}) for i in range(10)}
    until(
        lambda: svc.metric('headrace_signals_delivered_total{addressed="correlation"}') >= 10,
        "the deliveries to the waiting runs",
    )
    # back, it dies once between writing a batch's events and its snapshots: the
    # next start replays them and writes their awaits and cancels again
    orchestrator.start({"HEADRACE_CRASH_POINT": "after-events", "HEADRACE_CRASH_PROBABILITY": "1"})
    until(lambda: not orchestrator.alive, "the orchestrator to crash itself", 90)
    orchestrator.start()
    _received_once(s, waiting_runs)
    _received_once(s, later_runs)
    _audit_clean(s)
    assert svc.metric("headrace_signals_duplicates_total") > 0  # the replayed awaits/cancels
