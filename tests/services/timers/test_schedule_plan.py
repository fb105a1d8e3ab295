"""Schedule planning: catch-up window and overlap policies (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.services.timers.schedule_plan import ScheduleState, plan, run_id_for

MIN = 60_000
T0 = int(datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)


def p(**kw: object):
    base = dict(
        name="s",
        cron="* * * * *",
        timezone="UTC",
        overlap="allow",
        catchup_window_ms=5 * MIN,
        paused=False,
        updated_at=T0,
        state=None,
        now=T0,
        running=None,
    )
    base.update(kw)
    return plan(**base)  # type: ignore[arg-type]


def test_nothing_before_the_first_firing() -> None:
    assert p(now=T0 + 59_000).state is None


def test_a_new_schedule_fires_from_its_creation() -> None:
    got = p(now=T0 + MIN + 10)
    assert got.fires == [T0 + MIN]
    assert got.state == ScheduleState(T0 + MIN, None, run_id_for("s", T0 + MIN))


def test_firings_older_than_the_window_are_late() -> None:
    state = ScheduleState(last=T0)
    got = p(state=state, now=T0 + 10 * MIN)
    assert got.fires == [T0 + m * MIN for m in range(5, 11)]
    assert got.late == 4
    assert got.state is not None and got.state.last == T0 + 10 * MIN


def test_skip_starts_the_oldest_and_skips_the_rest() -> None:
    state = ScheduleState(last=T0, last_run="s-x")
    got = p(overlap="skip", state=state, now=T0 + 3 * MIN, running=False)
    assert got.fires == [T0 + MIN] and got.overlapped == 2
    busy = p(overlap="skip", state=state, now=T0 + 3 * MIN, running=True)
    assert busy.fires == [] and busy.overlapped == 3


def test_buffer_one_keeps_the_newest_for_later() -> None:
    state = ScheduleState(last=T0, last_run="s-x")
    busy = p(overlap="buffer_one", state=state, now=T0 + 3 * MIN, running=True)
    assert busy.fires == [] and busy.state is not None
    assert busy.state.buffered == T0 + 3 * MIN
    done = p(overlap="buffer_one", state=busy.state, now=T0 + 3 * MIN + 1, running=False)
    assert done.fires == [T0 + 3 * MIN]
    assert done.state is not None and done.state.buffered is None


def test_unknown_run_status_is_flagged_and_treated_as_finished() -> None:
    state = ScheduleState(last=T0, last_run="s-x")
    got = p(overlap="skip", state=state, now=T0 + MIN, running=None)
    assert got.fires == [T0 + MIN] and got.guessed


def test_a_paused_schedule_does_nothing_and_resuming_does_not_catch_up() -> None:
    state = ScheduleState(last=T0)
    assert p(paused=True, state=state, now=T0 + 10 * MIN).state is None
    resumed = p(state=state, updated_at=T0 + 10 * MIN + 5, now=T0 + 10 * MIN + 30_000)
    assert resumed.state is None and resumed.fires == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 20 * MIN), min_size=1, max_size=20),
    st.sampled_from(["allow", "skip", "buffer_one"]),
    st.integers(0, 10 * MIN),
)
def test_every_firing_is_handled_once_and_none_outside_the_window(
    steps: list[int], overlap: str, window: int
) -> None:
    """Ticking at arbitrary moments never starts a firing twice nor one that was late."""
    state = None
    now = T0
    started: list[int] = []
    for step in steps:
        now += step
        got = p(overlap=overlap, catchup_window_ms=window, state=state, now=now, running=None)
        for f in got.fires:
            assert now - f <= window or (state is not None and f == state.buffered)
        started.extend(got.fires)
        state = got.state or state
    assert len(started) == len(set(started))
    assert started == sorted(started)
    if overlap == "allow":
        expected_last = T0 + ((now - T0) // MIN) * MIN
        assert state is None or state.last == expected_last
