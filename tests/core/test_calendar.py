"""Business-calendar maths: properties over random calendars, plus pinned DST cases."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from headrace.core.calendar import (
    HOUR_MS,
    Calendar,
    add,
    add_days,
    always,
    between,
    calendar_document,
    parse_calendar,
    resolve,
)
from headrace.core.localtime import local_date, to_instant, to_local, zone

ZONES = ["Europe/Paris", "America/New_York", "UTC", "Australia/Lord_Howe", "Asia/Kolkata"]
T_MIN = int(datetime(2025, 1, 1).timestamp() * 1000)
T_MAX = int(datetime(2027, 12, 31).timestamp() * 1000)
MINUTE = 60_000


@st.composite
def windows(draw: st.DrawFn) -> str:
    """Zero to three non-overlapping windows on a 15-minute grid, as text."""
    cuts = sorted(draw(st.sets(st.integers(0, 96), max_size=6)))
    if len(cuts) % 2:
        cuts = cuts[:-1]
    return ",".join(
        f"{a * 15 // 60:02d}:{a * 15 % 60:02d}-{b * 15 // 60:02d}:{b * 15 % 60:02d}"
        for a, b in zip(cuts[::2], cuts[1::2], strict=True)
    )


@st.composite
def calendars(draw: st.DrawFn) -> Calendar:
    hours = {day: draw(windows()) for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    assume(any(hours.values()))
    dates = st.dates(date(2025, 1, 1), date(2027, 12, 31))
    doc = {
        "name": "c",
        "timezone": draw(st.sampled_from(ZONES)),
        "hours": {k: v for k, v in hours.items() if v},
        "holidays": [d.isoformat() for d in draw(st.lists(dates, max_size=8))],
        "half_days": {d.isoformat(): draw(windows()) for d in draw(st.lists(dates, max_size=4))},
    }
    return parse_calendar(doc)


instants = st.integers(T_MIN, T_MAX)
durations = st.integers(0, 120 * HOUR_MS)


def in_working_time(cal: Calendar, u: int) -> bool:
    """``u`` lies in ``(s, e]`` of some working window (a window's end is still working time)."""
    d = local_date(u, cal.tz)
    return any(s < u <= e for day in (d - timedelta(days=1), d) for s, e in cal.windows(day))


@settings(max_examples=150, deadline=None)
@given(calendars(), instants, instants, durations)
def test_add_is_monotonic_in_the_start(cal: Calendar, t1: int, t2: int, d: int) -> None:
    t1, t2 = min(t1, t2), max(t1, t2)
    assert add(cal, t1, d) <= add(cal, t2, d)


@settings(max_examples=150, deadline=None)
@given(calendars(), instants, durations, durations)
def test_add_is_monotonic_in_the_duration(cal: Calendar, t: int, d1: int, d2: int) -> None:
    d1, d2 = min(d1, d2), max(d1, d2)
    assert add(cal, t, d1) <= add(cal, t, d2)


@settings(max_examples=150, deadline=None)
@given(calendars(), instants, durations, durations)
def test_adding_a_then_b_is_adding_a_plus_b(cal: Calendar, t: int, a: int, b: int) -> None:
    assert add(cal, add(cal, t, a), b) == add(cal, t, a + b)


@settings(max_examples=150, deadline=None)
@given(calendars(), instants, st.integers(1, 120 * HOUR_MS))
def test_add_never_lands_outside_working_hours(cal: Calendar, t: int, d: int) -> None:
    u = add(cal, t, d)
    assert u > t
    assert in_working_time(cal, u)
    assert between(cal, t, u) == d


@settings(max_examples=150, deadline=None)
@given(calendars(), instants, st.integers(0, 15), st.integers(0, 15))
def test_add_days_is_monotonic_and_lands_in_working_hours(
    cal: Calendar, t: int, n1: int, n2: int
) -> None:
    n1, n2 = min(n1, n2), max(n1, n2)
    u1, u2 = add_days(cal, t, n1), add_days(cal, t, n2)
    assert t <= u1 <= u2
    if n1 > 0:
        assert in_working_time(cal, u1)
    assert add_days(cal, t, n2) <= add_days(cal, t + 3 * HOUR_MS, n2)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["Europe/Paris", "America/New_York"]),
    st.sampled_from(["09:00-17:00", "08:00-12:00,13:00-18:30", "22:00-24:00"]),
    instants,
    st.integers(0, 12),
    st.integers(0, 12),
)
def test_business_days_on_equal_days_are_whole_days_of_hours(
    tz: str, hours: str, t: int, a: int, b: int
) -> None:
    cal = parse_calendar({"name": "c", "timezone": tz, "hours": {"mon-fri": hours}})
    length = between(
        cal, to_instant(datetime(2026, 6, 1), cal.tz), to_instant(datetime(2026, 6, 2), cal.tz)
    )
    assert add_days(cal, t, a) == add(cal, t, a * length)
    assert add_days(cal, add_days(cal, t, a), b) == add_days(cal, t, a + b)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["Europe/Paris", "America/New_York"]), instants, durations)
def test_a_24x7_calendar_is_elapsed_time_across_dst(tz: str, t: int, d: int) -> None:
    assert add(always(tz), t, d) == t + d


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["Europe/Paris", "America/New_York"]), instants, st.integers(1, 80 * HOUR_MS)
)
def test_office_hours_stay_office_hours_in_every_season(tz: str, t: int, d: int) -> None:
    cal = parse_calendar({"name": "o", "timezone": tz, "hours": {"mon-fri": "09:00-17:00"}})
    local = to_local(add(cal, t, d), cal.tz)
    assert local.weekday() < 5
    assert time(9, 0) < local.time() <= time(17, 0)


def _paris(*args: int) -> int:
    return to_instant(datetime(*args), zone("Europe/Paris"))


OFFICE = parse_calendar(
    {
        "name": "paris",
        "timezone": "Europe/Paris",
        "hours": {"mon-fri": "09:00-17:00"},
        "holidays": ["2026-12-25"],
        "half_days": {"2026-12-24": "09:00-13:00"},
    }
)


def test_business_hours_across_the_spring_dst_weekend_in_paris() -> None:
    friday = _paris(2026, 3, 27, 16, 0)  # CET; Monday 30 March is CEST
    assert add(OFFICE, friday, 2 * HOUR_MS) == _paris(2026, 3, 30, 10, 0)
    assert _paris(2026, 3, 30, 10, 0) - friday == (24 * 2 + 18 - 1) * HOUR_MS


def test_a_window_through_the_spring_gap_is_as_long_as_it_really_is() -> None:
    night = parse_calendar({"name": "n", "timezone": "Europe/Paris", "hours": {"*": "01:00-04:00"}})
    day = date(2026, 3, 29)  # 02:00 CET jumps to 03:00 CEST
    s, e = night.windows(day)[0]
    assert e - s == 2 * HOUR_MS
    fall = parse_calendar(
        {"name": "f", "timezone": "America/New_York", "hours": {"*": "00:00-03:00"}}
    )
    s, e = fall.windows(date(2026, 11, 1))[0]  # 02:00 EDT falls back to 01:00 EST
    assert e - s == 4 * HOUR_MS


def test_days_skip_holidays_weekends_and_clip_to_half_days() -> None:
    t = _paris(2026, 12, 23, 15, 0)
    assert add_days(OFFICE, t, 1) == _paris(2026, 12, 24, 13, 0)
    assert add_days(OFFICE, t, 2) == _paris(2026, 12, 28, 15, 0)
    assert add_days(OFFICE, _paris(2026, 12, 21, 9, 0), 1) == _paris(2026, 12, 21, 17, 0)
    assert add_days(OFFICE, _paris(2026, 12, 19, 11, 0), 1) == _paris(2026, 12, 21, 17, 0)


def test_resolve_takes_a_fraction_of_the_span() -> None:
    t = _paris(2026, 6, 1, 9, 0)  # a Monday
    assert resolve(OFFICE, {"calendar": "paris", "duration_ms": 16 * HOUR_MS, "from": t}) == _paris(
        2026, 6, 2, 17, 0
    )
    risk = {"calendar": "paris", "days": 2, "from": t, "fraction": 0.75}
    assert resolve(OFFICE, risk) == _paris(2026, 6, 2, 13, 0)
    with pytest.raises(KeyError):
        resolve(OFFICE, {"calendar": "paris", "from": t})


def test_parse_lists_every_problem_and_round_trips() -> None:
    with pytest.raises(ValueError) as info:
        parse_calendar(
            {
                "name": "bad",
                "timezone": "Mars/Olympus",
                "hours": {"mon": "17:00-09:00", "funday": "09:00-10:00"},
                "holidays": ["yesterday"],
            }
        )
    text = str(info.value)
    for needle in ("Mars/Olympus", "ends before it starts", "funday", "yesterday"):
        assert needle in text
    assert parse_calendar(calendar_document(OFFICE)) == OFFICE


def test_a_calendar_without_working_hours_is_refused() -> None:
    with pytest.raises(ValueError, match="no working hours"):
        parse_calendar({"name": "never", "timezone": "UTC", "hours": {}})


@pytest.mark.parametrize("minutes", [1, 59, 61])
def test_add_counts_minutes_inside_one_window(minutes: int) -> None:
    t = _paris(2026, 6, 1, 9, 0)
    assert add(OFFICE, t, minutes * MINUTE) == t + minutes * MINUTE
