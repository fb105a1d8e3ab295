"""Cron parsing and next-firing maths, with the DST rules pinned."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.core.cron import firings, next_after, parse_cron
from headrace.core.localtime import to_instant, to_local, zone

MIN = 60_000


def _at(tz: str, *args: int) -> int:
    return to_instant(datetime(*args), zone(tz))


def _utc(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_five_and_six_fields_and_macros() -> None:
    assert parse_cron("*/15 9-17 * * mon-fri").minutes == (0, 15, 30, 45)
    six = parse_cron("*/10 * * * * *")
    assert six.seconds == (0, 10, 20, 30, 40, 50)
    assert parse_cron("@daily").hours == (0,)
    assert parse_cron("0 0 * * 7").weekdays == frozenset({0})
    assert parse_cron("0 12 * jan,jul *").months == frozenset({1, 7})


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("* * * *", "4 fields"),
        ("61 * * * *", "outside 0-59"),
        ("* * * * funday", "not a number"),
        ("5-1 * * * *", "backwards"),
        ("*/0 * * * *", "step"),
        ("0 0 L * *", "not supported"),
    ],
)
def test_bad_expressions_say_what_is_wrong(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_cron(text)


def test_next_after_is_strictly_later_and_walks_the_calendar() -> None:
    c = parse_cron("30 9 * * mon-fri")
    friday = _utc(2026, 6, 5, 9, 30)
    assert next_after(c, "UTC", friday - 1) == friday
    assert next_after(c, "UTC", friday) == _utc(2026, 6, 8, 9, 30)


def test_either_day_field_matches_when_both_are_restricted() -> None:
    c = parse_cron("0 9 1 * mon")
    got = firings(c, "UTC", _utc(2026, 6, 1, 0, 0), _utc(2026, 6, 30, 0, 0))
    days = [datetime.fromtimestamp(t / 1000, UTC).day for t in got]
    assert days == [1, 8, 15, 22, 29]


def test_thirtieth_of_february_never_fires() -> None:
    assert next_after(parse_cron("0 0 30 2 *"), "UTC", _utc(2026, 1, 1)) is None


def test_a_firing_in_the_spring_gap_happens_at_the_jump_once() -> None:
    paris = "Europe/Paris"
    daily = parse_cron("30 2 * * *")
    assert next_after(daily, paris, _at(paris, 2026, 3, 28, 12, 0)) == _utc(2026, 3, 29, 1, 0)
    quarter = parse_cron("*/15 2 * * *")
    got = firings(quarter, paris, _at(paris, 2026, 3, 29, 0, 0), _at(paris, 2026, 3, 29, 12, 0))
    assert got == [_utc(2026, 3, 29, 1, 0)]


def test_a_time_that_occurs_twice_fires_once() -> None:
    ny = "America/New_York"
    daily = parse_cron("30 1 * * *")
    got = firings(daily, ny, _at(ny, 2026, 10, 31, 12, 0), _at(ny, 2026, 11, 2, 0, 0))
    assert got == [_utc(2026, 11, 1, 5, 30)]  # 01:30 EDT, not again at 01:30 EST
    hourly = parse_cron("0 * * * *")
    got = firings(hourly, ny, _utc(2026, 11, 1, 4, 0), _utc(2026, 11, 1, 8, 0))
    # 01:00 EDT (05:00Z), 02:00 EST (07:00Z), 03:00 EST (08:00Z): the repeated 01:00 fires once
    assert got == [_utc(2026, 11, 1, 5, 0), _utc(2026, 11, 1, 7, 0), _utc(2026, 11, 1, 8, 0)]


crons = st.builds(
    lambda m, h, dow: f"{m} {h} * * {dow}",
    st.sampled_from(["*", "*/7", "0", "5,35", "10-20/5"]),
    st.sampled_from(["*", "*/3", "9-17", "0"]),
    st.sampled_from(["*", "mon-fri", "sat,sun", "wed"]),
)


@settings(max_examples=200, deadline=None)
@given(crons, st.sampled_from(["UTC", "Asia/Kolkata", "Europe/Paris"]), st.integers(0, 365 * 3))
def test_next_after_matches_a_brute_force_scan(text: str, tz: str, day: int) -> None:
    cron = parse_cron(text)
    t = _utc(2025, 1, 1) + day * 86_400_000 + 7 * 60_000 + 1234
    got = next_after(cron, tz, t)
    assert got is not None and got > t
    u = (t // MIN + 1) * MIN
    while u < got:
        wall = to_local(u, zone(tz))
        matches = (
            wall.minute in cron.minutes
            and wall.hour in cron.hours
            and wall.month in cron.months
            and cron.matches_date(wall.date())
        )
        first = to_instant(wall, zone(tz)) == u
        assert not (matches and first), f"{text} in {tz}: missed {u} before {got}"
        u += MIN
    assert to_local(got, zone(tz)).second == 0


@settings(max_examples=100, deadline=None)
@given(crons, st.sampled_from(["Europe/Paris", "America/New_York"]), st.integers(0, 365 * 3))
def test_firings_are_strictly_increasing(text: str, tz: str, day: int) -> None:
    t = _utc(2025, 1, 1) + day * 86_400_000
    got = firings(parse_cron(text), tz, t, t + 3 * 86_400_000)
    assert got == sorted(set(got))
    assert all(t < g <= t + 3 * 86_400_000 for g in got)
