"""Cron schedules: the timer service starts runs by producing CloudEvents to `ingress`."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

import pytest
from support import wait_for
from timers_kit import TimersProcess, now_ms

from headrace.services.timers.schedules import (
    ScheduleSpec,
    new_schedule,
    publish_schedule,
    trigger_schedule,
)
from headrace.settings import Settings
from headrace.streams.cloudevents_in import START_TYPE, parse
from headrace.streams.partition_reader import Record, read_partition

pytestmark = pytest.mark.integration


def ingress(settings: Settings) -> list[Record]:
    return [
        r
        for p in range(settings.partitions)
        for r in read_partition(settings.bootstrap, settings.topics.ingress, p, 0)
    ]


def ids(settings: Settings) -> list[str]:
    return sorted(dict(r.headers)["ce_id"].decode() for r in ingress(settings))


def every_two_seconds(**kw: object) -> ScheduleSpec:
    doc = {
        "name": "tick",
        "workflow": "wf",
        "cron": "*/2 * * * * *",
        "timezone": "Europe/Paris",
        "input": {"x": 1},
        "tenant": "acme",
        "overlap": "allow",
        "catchup_window_ms": 3000,
    }
    doc.update(kw)
    return new_schedule(doc)


def test_a_schedule_starts_runs_the_router_can_read(
    platform: Settings, timers: Callable[..., TimersProcess]
) -> None:
    spec = publish_schedule(platform, every_two_seconds())
    svc = timers().start()
    svc.wait_ready()
    wait_for(lambda: len(ingress(platform)) >= 3, 30, "three firings")
    records = ingress(platform)
    for rec in records:
        ev = parse(rec.value, rec.headers)
        assert (ev.type, ev.source, ev.tenant, ev.mode) == (
            START_TYPE,
            "headrace/schedule/tick",
            "acme",
            "binary",
        )
        assert ev.id.startswith("tick/") and ev.id.endswith("Z")
        assert ev.data["workflow"] == "wf" and ev.data["input"] == {"x": 1}
        assert ev.data["run_id"].startswith("tick-")
        assert rec.key == b"tick"
    times = sorted(json.dumps(parse(r.value, r.headers).id) for r in records)
    assert len(set(times)) == len(times)
    assert min(r.timestamp_ms for r in records) >= spec.updated_at

    # Paused: no firing; resumed: firing again, without catching up the pause.
    publish_schedule(platform, spec.model_copy(update={"paused": True}))
    before = len(ingress(platform))
    paused_at = now_ms()
    wait_for(lambda: now_ms() > paused_at + 5000, 10, "five paused seconds")
    assert len(ingress(platform)) <= before + 1  # one may have been in flight
    during = len(ingress(platform))
    publish_schedule(platform, spec.model_copy(update={"paused": False}))
    wait_for(lambda: len(ingress(platform)) >= during + 2, 30, "firings after the resume")
    assert len(ingress(platform)) <= during + 3

    run_id = trigger_schedule(platform, spec)
    assert run_id.startswith("tick-manual-")
    wait_for(lambda: any("/manual/" in i for i in ids(platform)), 10, "the manual trigger")


def test_firings_missed_while_down_are_caught_up_within_the_window_only(
    platform: Settings, timers: Callable[..., TimersProcess]
) -> None:
    publish_schedule(platform, every_two_seconds())
    svc = timers().start()
    svc.wait_ready()
    wait_for(lambda: len(ingress(platform)) >= 1, 30, "a first firing")
    svc.kill9()
    down = now_ms()
    seen = len(set(ids(platform)))
    wait_for(lambda: now_ms() > down + 10_000, 15, "ten seconds down")
    restarted = now_ms()
    svc.start()
    svc.wait_ready()
    wait_for(
        lambda: svc.metric('headrace_schedule_skipped_total{reason="late",schedule="tick"}') >= 2,
        30,
        "late firings to be skipped",
    )
    wait_for(lambda: len(set(ids(platform))) >= seen + 2, 30, "firings to resume")
    # A firing produced twice (killed before its state was written) keeps its id.
    assert len(set(ids(platform))) <= len(ids(platform))
    # Down for 10 s with a 3 s window: no firing is started more than 3 s late ...
    for rec in ingress(platform):
        fire_time = _ms(dict(rec.headers)["ce_id"].decode())
        assert rec.timestamp_ms - fire_time <= 3000 + 1000, "started outside the window"
    # ... so most of the downtime's firings were skipped.
    fired = [_ms(i) for i in ids(platform)]
    assert len([t for t in fired if down + 2000 < t < restarted]) <= 2


def _ms(event_id: str) -> int:
    stamp = event_id.split("/")[-1].replace("Z", "+00:00")
    return int(datetime.fromisoformat(stamp).timestamp() * 1000)
