"""The timer service under kill -9 and under a storm of due timers."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest
from support import wait_for
from timers_kit import CommandTap, TimersProcess, arm, now_ms, produce

from headrace.core.decider.effects import ArmTimer
from headrace.core.outbox import messages_for
from headrace.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_kill_9_at_random_moments_loses_no_timer(
    platform: Settings, timers: Callable[..., TimersProcess]
) -> None:
    """Timers armed and falling due across six SIGKILLs: each fires, none early, none lost."""
    rng = random.Random(20261125)
    svc = timers().start()
    svc.wait_ready()
    start = now_ms()
    total, cycles = 4000, 6
    chunk = total // cycles
    ids: dict[str, int] = {}
    with CommandTap(platform) as tap:
        for cycle in range(cycles):
            # Each chunk is due over the next ~20 s, so kills hit arming and firing alike.
            base = now_ms()
            batch = [
                (f"k{cycle}-{i}:1", f"k{cycle}-{i}", base + rng.randrange(500, 20_000))
                for i in range(chunk)
            ]
            ids.update({tid: due for tid, _, due in batch})
            arm(platform, batch)
            time.sleep(rng.uniform(0.5, 4.0))
            svc.kill9()
            time.sleep(rng.uniform(0.0, 3.0))
            svc.start()
            svc.wait_ready(120)
        last_due = max(ids.values())
        wait_for(
            lambda: set(ids) <= set(tap.counts()),
            max(120, (last_due - now_ms()) / 1000 + 90),
            f"all {total} timers to fire",
        )
        counts = tap.counts()
        first = tap.first()
    missing = set(ids) - set(counts)
    assert not missing, f"{len(missing)} timers never fired, e.g. {sorted(missing)[:5]}"
    early = [t for t, due in ids.items() if first[t].at < due]
    assert not early, f"fired before due: {early[:5]}"
    assert all(first[t].due == due for t, due in ids.items())
    dupes = sum(c - 1 for c in counts.values())
    print(
        f"\nkill -9 x{cycles}: {total} timers over {(now_ms() - start) / 1000:.0f} s, "
        f"{dupes} duplicate firings (harmless: the orchestrator dedupes on timer id)"
    )


def test_a_storm_of_due_timers_fires_within_bounds_and_starves_no_one(
    platform: Settings, timers: Callable[..., TimersProcess]
) -> None:
    """20,000 timers due in one second on most partitions; a quiet partition keeps time."""
    svc = timers().start()
    svc.wait_ready()
    quiet_tenant = "quiet"
    quiet = platform.routing.partition(quiet_tenant, "q")
    stormy = [
        t for t in (f"s{i}" for i in range(500)) if platform.routing.partition(t, "x") != quiet
    ]
    storm_at = now_ms() + 30_000
    n = 20_000
    effects = [
        ArmTimer(f"s{i}:1", stormy[i % len(stormy)], f"s{i}", "wait", storm_at + i % 1000, None)
        for i in range(n)
    ]
    with CommandTap(platform) as tap:
        produce(platform, messages_for(effects, platform.routing))
        arm(platform, [("later:1", "q", storm_at + 2000)], tenant=quiet_tenant)
        wait_for(
            lambda: svc.metric("headrace_timers_armed_total") == n + 1,
            max(5.0, (storm_at - now_ms()) / 1000),
            "the storm to be armed before it is due",
        )
        # Arming goes on during the storm: this one is armed after it began.
        wait_for(lambda: now_ms() > storm_at + 300, 40, "the storm to begin")
        arm(platform, [("during:1", "q2", now_ms() + 1500)], tenant=quiet_tenant)
        wait_for(lambda: len(tap.counts()) == n + 2, 60, "storm and quiet timers to fire")
        first = tap.first()
        counts = tap.counts()
    storm_end = max(first[f"s{i}:1"].at for i in range(n))
    lateness = {t: f.at - f.due for t, f in first.items()}
    print(
        f"\nstorm of {n}: all fired {(storm_end - storm_at) / 1000:.1f} s after the due second; "
        f"quiet timers late by {lateness['later:1']} ms and {lateness['during:1']} ms"
    )
    assert storm_end - (storm_at + 1000) < 15_000
    assert lateness["later:1"] < 1000
    assert lateness["during:1"] < 1000
    assert all(c == 1 for c in counts.values())
    m = svc.metrics()
    assert m["headrace_timers_drift_seconds_count"] == n + 2


def test_partitions_move_between_workers_without_losing_timers(
    platform: Settings, timers: Callable[..., TimersProcess]
) -> None:
    """A second worker joins, then the first leaves: every timer fires, on time or late."""
    a = timers(instance="a").start()
    a.wait_ready()
    base = now_ms()
    ids = {f"m{i}:1": base + 2000 + i * 15 for i in range(2000)}  # due over ~30 s
    tenants = [f"t{i}" for i in range(48)]
    effects = [
        ArmTimer(tid, tenants[i % len(tenants)], tid.split(":")[0], "wait", due, None)
        for i, (tid, due) in enumerate(ids.items())
    ]
    with CommandTap(platform) as tap:
        produce(platform, messages_for(effects, platform.routing))
        b = timers(instance="b").start()
        wait_for(
            lambda: b.alive and b.metric("headrace_timers_active_partitions") > 0,
            90,
            "the second worker to take partitions",
        )
        shared = a.metric("headrace_timers_active_partitions")
        assert 0 < shared < platform.partitions
        assert a.stop(60) == 0
        b.wait_ready(90)
        wait_for(lambda: set(ids) <= set(tap.counts()), 120, "every timer to fire")
        first = tap.first()
        counts = tap.counts()
    assert all(first[t].at >= due for t, due in ids.items())
    print(f"\nrebalanced twice: {sum(c - 1 for c in counts.values())} duplicate firings")
