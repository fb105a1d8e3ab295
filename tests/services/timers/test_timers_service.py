"""The timer service against a real broker, run as a subprocess."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from support import wait_for
from timers_kit import (
    CommandTap,
    TimersProcess,
    arm,
    cancel,
    freeze_body,
    now_ms,
    op_message,
    produce,
    thaw_body,
)

from headrace.core.decider.effects import ArmTimer
from headrace.core.outbox import messages_for
from headrace.services.timers.calendars import publish_calendar
from headrace.settings import Settings
from headrace.streams.partition_reader import read_partition

pytestmark = pytest.mark.integration

# Fire time minus due time we accept on a quiet, shared CI machine.
ON_TIME_MS = 1500


def test_a_timer_fires_once_at_its_due_time_and_a_cancelled_one_never(
    platform: Settings, timers: Callable[..., TimersProcess]
) -> None:
    svc = timers().start()
    svc.wait_ready()
    due = now_ms() + 3000
    with CommandTap(platform) as tap:
        arm(platform, [("a:1", "a", due), ("b:1", "b", due), ("c:1", "c", due + 500)])
        cancel(platform, "b:1", "b")
        arm(platform, [("c:1", "c", due + 60_000)])  # re-armed: the first arm stands
        wait_for(lambda: {"a:1", "c:1"} <= set(tap.counts()), 30, "a and c to fire")
        wait_for(lambda: now_ms() > due + 3000, 10, "a while after the due time")
        first = tap.first()
        assert tap.counts() == {"a:1": 1, "c:1": 1}
        assert first["a:1"].due == due and due <= first["a:1"].at <= due + ON_TIME_MS
        assert first["c:1"].due == due + 500
        assert first["a:1"].key == "acme/a"
        assert first["a:1"].partition == platform.routing.partition("acme", "a")
    m = svc.metrics()
    assert m["headrace_timers_armed_total"] == 3
    assert m["headrace_timers_duplicate_arms_total"] == 1
    assert m["headrace_timers_cancelled_total"] == 1
    assert m["headrace_timers_fired_total"] == 2


def test_a_timer_due_while_the_service_is_down_fires_once_after_restart(
    platform: Settings, timers: Callable[..., TimersProcess]
) -> None:
    svc = timers().start()
    svc.wait_ready()
    due = now_ms() + 4000
    arm(platform, [("d:1", "d", due)])
    wait_for(lambda: svc.metric("headrace_timers_armed_total") == 1, 30, "the timer armed")
    assert svc.stop(30) == 0
    with CommandTap(platform) as tap:
        wait_for(lambda: now_ms() > due + 2000, 10, "the due time to pass while it is down")
        assert tap.counts() == {}
        svc.start()
        wait_for(lambda: tap.counts() == {"d:1": 1}, 90, "the timer to fire after restart")
        svc.wait_ready()
        wait_for(lambda: svc.metric("headrace_timers_fired_total") == 1, 10, "fired metric")
        assert tap.counts() == {"d:1": 1}


def test_unreadable_messages_are_dead_lettered_and_the_rest_go_on(
    platform: Settings, timers: Callable[..., TimersProcess]
) -> None:
    svc = timers().start()
    svc.wait_ready()
    bad = op_message(platform, {"op": "arm", "timer_id": "x", "tenant": "acme", "run_id": "x"})
    with CommandTap(platform) as tap:
        produce(platform, [bad])
        arm(platform, [("ok:1", "ok", now_ms() + 500)])
        wait_for(lambda: tap.counts() == {"ok:1": 1}, 30, "the good timer to fire")

    def letters() -> list:
        return list(read_partition(platform.bootstrap, platform.topics.dlq, 0, 0))

    [letter] = wait_for(letters, 30, "a dead letter")
    headers = dict(letter.headers)
    assert headers["headrace-error-code"] == b"HR-WIRE-001"
    assert b"command" in headers["headrace-error"]
    assert headers["headrace-source-topic"] == platform.topics.timers.encode()


def test_freeze_keeps_the_remaining_time_and_catch_up_fires_at_once(
    platform: Settings, timers: Callable[..., TimersProcess]
) -> None:
    svc = timers().start()
    svc.wait_ready()
    t0 = now_ms()
    with CommandTap(platform) as tap:
        arm(platform, [("keep:1", "keep", t0 + 3000), ("catch:1", "catch", t0 + 2000)])
        produce(
            platform,
            [
                op_message(platform, freeze_body("keep:1", "keep", t0, "freeze", 5)),
                op_message(platform, freeze_body("catch:1", "catch", t0, "catch_up", 5)),
            ],
        )
        wait_for(lambda: svc.metric("headrace_timers_frozen_total") == 2, 30, "both frozen")
        wait_for(lambda: now_ms() > t0 + 4000, 10, "both due times to pass")
        assert tap.counts() == {}
        thawed = now_ms()
        produce(
            platform,
            [
                op_message(platform, thaw_body("keep:1", "keep", thawed, 6)),
                op_message(platform, thaw_body("catch:1", "catch", thawed, 6)),
            ],
        )
        wait_for(lambda: len(tap.counts()) == 2, 30, "both to fire after the thaw")
        first = tap.first()
        assert first["catch:1"].due == t0 + 2000
        assert first["catch:1"].at < thawed + ON_TIME_MS
        assert first["keep:1"].due == thawed + 3000
        assert first["keep:1"].at >= thawed + 3000


def test_business_time_resolves_against_the_calendar_or_falls_back_to_24x7(
    platform: Settings, timers: Callable[..., TimersProcess]
) -> None:
    publish_calendar(
        platform, {"name": "always", "timezone": "Europe/Paris", "hours": {"*": "00:00-24:00"}}
    )
    svc = timers().start()
    svc.wait_ready()
    t0 = now_ms()
    effects = [
        ArmTimer(
            "k:1",
            "acme",
            "k",
            "wait",
            None,
            {"calendar": "always", "duration_ms": 2000, "from": t0},
        ),
        ArmTimer(
            "u:1", "acme", "u", "wait", None, {"calendar": "nope", "duration_ms": 2500, "from": t0}
        ),
    ]
    with CommandTap(platform) as tap:
        produce(platform, messages_for(effects, platform.routing))
        wait_for(lambda: len(tap.counts()) == 2, 30, "both business timers to fire")
        first = tap.first()
        assert first["k:1"].due == t0 + 2000
        assert first["u:1"].due == t0 + 2500
    m = svc.metrics()
    assert m['headrace_timers_unknown_calendar_total{calendar="nope"}'] == 1
    assert 'headrace_timers_unknown_calendar_total{calendar="always"}' not in m
