"""Business calendars and business-time arithmetic: "16 business hours after t".

A calendar is a time zone, working hours per weekday (any number of windows a
day, e.g. ``09:00-12:30,13:30-17:30``), holidays (closed all day) and half-days
(dates with their own windows). Working time is the union of those windows,
laid out in *local wall-clock time* and measured in real elapsed time, so a
window that spans a DST change is as long as it really is (see
:mod:`headrace.core.localtime` for how gap and fold times map to instants).

The arithmetic, all in epoch milliseconds:

* :func:`add` — ``add(cal, t, d)`` is the earliest instant ``u`` such that the
  working time in ``[t, u)`` is ``d``. For ``d > 0`` it lies inside a window or
  on its end (``s < u <= e``): 8 business hours from Monday 09:00 is Monday
  17:00, not Tuesday 09:00. ``add(add(t, a), b) == add(t, a + b)``.
* :func:`add_days` — N business days: the same position within the working
  day, N working days later, clipped to a shorter day (a half-day). Starting
  outside working hours counts from the end of the last working day (the start
  of the next one, which is the same position): one business day from Monday
  09:00 or from Friday 18:00 is Monday 17:00. On a calendar whose working days
  all have length ``L``, ``add_days(t, n) == add(t, n * L)``.
* :func:`between` — working time in ``[a, b)``.
* :func:`resolve` — the due time of a timer's ``business`` payload
  (``{calendar, duration_ms | days, from[, fraction]}``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from headrace.core.localtime import DAY, local_date, midnight, to_instant, zone

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
MAX_SEARCH_DAYS = 366 * 30  # a calendar with no working time for 30 years is a mistake

Window = tuple[int, int]  # minutes since local midnight, [start, end), end <= 1440

_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True, slots=True)
class Calendar:
    """A compiled business calendar. Build one with :func:`parse_calendar` or :func:`always`."""

    name: str
    timezone: str
    week: tuple[tuple[Window, ...], ...]  # Monday first, 7 entries
    holidays: frozenset[date] = frozenset()
    special: Mapping[date, tuple[Window, ...]] = field(default_factory=dict)
    _cache: dict[date, tuple[tuple[int, int], ...]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.timezone)

    def windows_local(self, d: date) -> tuple[Window, ...]:
        """Working windows of date ``d`` in local minutes (empty on holidays and days off)."""
        if d in self.special:
            return self.special[d]
        if d in self.holidays:
            return ()
        return self.week[d.weekday()]

    def windows(self, d: date) -> tuple[tuple[int, int], ...]:
        """Working windows of date ``d`` as ``(start_ms, end_ms)`` instants, empty ones dropped."""
        hit = self._cache.get(d)
        if hit is not None:
            return hit
        tz = self.tz
        base = midnight(d)
        out = []
        for s, e in self.windows_local(d):
            a = to_instant(base + timedelta(minutes=s), tz)
            b = to_instant(base + timedelta(minutes=e), tz)
            if b > a:
                out.append((a, b))
        result = tuple(out)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[d] = result
        return result

    def has_working_time(self) -> bool:
        return any(self.week) or any(self.special.values())


def always(timezone: str = "UTC", name: str = "24x7") -> Calendar:
    """Every hour of every day: business time equals elapsed time."""
    return Calendar(name, timezone, tuple(((0, 1440),) for _ in WEEKDAYS))


# -- parsing -------------------------------------------------------------------


def parse_windows(value: str | Iterable[str], where: str) -> tuple[Window, ...]:
    """``"09:00-12:00,13:00-17:00"`` (or a list of ranges) → sorted windows; ``ValueError``."""
    parts = [value] if isinstance(value, str) else list(value)
    ranges = [p for item in parts for p in str(item).split(",") if p.strip()]
    out: list[Window] = []
    for text in ranges:
        m = _RANGE.match(text)
        if not m:
            raise ValueError(f"{where}: {text.strip()!r} is not a time range like '09:00-17:00'")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        s, e = h1 * 60 + m1, h2 * 60 + m2
        if m1 > 59 or m2 > 59 or s > 1440 or e > 1440:
            raise ValueError(f"{where}: {text.strip()!r} is not a valid time range (00:00-24:00)")
        if e <= s:
            raise ValueError(f"{where}: {text.strip()!r} ends before it starts")
        out.append((s, e))
    out.sort()
    for (_, e1), (s2, _) in pairwise(out):
        if s2 < e1:
            raise ValueError(f"{where}: working windows overlap")
    return tuple(out)


def parse_days(key: str) -> list[int]:
    """``"mon-fri"``, ``"sat,sun"``, ``"*"`` → weekday numbers (Monday 0)."""
    key = key.strip().lower()
    if key in ("*", "all", "daily"):
        return list(range(7))
    out: list[int] = []
    for part in key.split(","):
        a, _, b = part.strip().partition("-")
        if a[:3] not in WEEKDAYS or (b and b[:3] not in WEEKDAYS):
            raise ValueError(f"{key!r} is not a weekday, a range like 'mon-fri' or a list")
        i, j = WEEKDAYS.index(a[:3]), WEEKDAYS.index((b or a)[:3])
        out.extend(range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)])
    return out


def parse_calendar(doc: Mapping[str, Any]) -> Calendar:
    """Compile a calendar document (``calendars`` topic JSON); ``ValueError`` lists all problems.

    ``{"name", "timezone", "hours": {"mon-fri": "09:00-17:00", ...},
    "holidays": ["2026-12-25", ...], "half_days": {"2026-12-24": "09:00-13:00"}}``
    """
    problems: list[str] = []
    name = str(doc.get("name") or "")
    if not name:
        problems.append("name is missing")
    tzname = str(doc.get("timezone") or "UTC")
    try:
        zone(tzname)
    except ValueError as exc:
        problems.append(str(exc))
    week: list[tuple[Window, ...]] = [() for _ in WEEKDAYS]
    for key, value in dict(doc.get("hours") or {}).items():
        try:
            wins = parse_windows(value, f"hours[{key}]")
            for i in parse_days(key):
                week[i] = wins
        except ValueError as exc:
            problems.append(str(exc))
    holidays: set[date] = set()
    for text in doc.get("holidays") or ():
        try:
            holidays.add(date.fromisoformat(str(text)))
        except ValueError:
            problems.append(f"holiday {text!r} is not a date like 2026-12-25")
    special: dict[date, tuple[Window, ...]] = {}
    for text, value in dict(doc.get("half_days") or {}).items():
        try:
            special[date.fromisoformat(str(text))] = parse_windows(value, f"half_days[{text}]")
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError(f"calendar {name or '?'}: " + "; ".join(problems))
    cal = Calendar(name, tzname, tuple(week), frozenset(holidays), special)
    if not cal.has_working_time():
        raise ValueError(f"calendar {name}: it has no working hours at all — add 'hours'")
    return cal


def _fmt(w: Window) -> str:
    return f"{w[0] // 60:02d}:{w[0] % 60:02d}-{w[1] // 60:02d}:{w[1] % 60:02d}"


def calendar_document(cal: Calendar) -> dict[str, Any]:
    """The normalized JSON document of ``cal`` (what ``parse_calendar`` reads back)."""
    return {
        "name": cal.name,
        "timezone": cal.timezone,
        "hours": {WEEKDAYS[i]: ",".join(_fmt(w) for w in ws) for i, ws in enumerate(cal.week)},
        "holidays": sorted(d.isoformat() for d in cal.holidays),
        "half_days": {
            d.isoformat(): ",".join(_fmt(w) for w in ws) for d, ws in sorted(cal.special.items())
        },
    }


# -- arithmetic ----------------------------------------------------------------


def _days_from(cal: Calendar, t: int) -> Iterable[date]:
    d = local_date(t, cal.tz)
    for _ in range(MAX_SEARCH_DAYS):
        yield d
        d += DAY
    raise ValueError(f"calendar {cal.name}: no working time within {MAX_SEARCH_DAYS} days")


def add(cal: Calendar, t: int, duration_ms: int) -> int:
    """The earliest instant by which ``duration_ms`` of working time has passed since ``t``."""
    if duration_ms <= 0:
        return t
    left = duration_ms
    for d in _days_from(cal, t):
        for s, e in cal.windows(d):
            if e <= t:
                continue
            a = max(s, t)
            if e - a >= left:
                return a + left
            left -= e - a
    raise AssertionError("unreachable")


def between(cal: Calendar, a: int, b: int) -> int:
    """Working time (ms) in ``[a, b)``."""
    if b <= a:
        return 0
    tz = cal.tz
    d, last = local_date(a, tz), local_date(b, tz)
    total = 0
    while d <= last:
        for s, e in cal.windows(d):
            lo, hi = max(s, a), min(e, b)
            if hi > lo:
                total += hi - lo
        d += DAY
    return total


def _length(wins: tuple[tuple[int, int], ...]) -> int:
    return sum(e - s for s, e in wins)


def _at_offset(wins: tuple[tuple[int, int], ...], offset: int) -> int:
    """The earliest instant of a working day at which ``offset`` ms of it have passed."""
    left = offset
    for s, e in wins:
        if e - s >= left:
            return s + left
        left -= e - s
    return wins[-1][1]


def add_days(cal: Calendar, t: int, days: int) -> int:
    """``days`` business days after ``t`` (see the module docstring for the rule)."""
    if days <= 0:
        return t
    it = iter(_days_from(cal, t))
    offset = 0
    for d in it:
        wins = cal.windows(d)
        if not wins:
            continue
        if t <= wins[0][0]:
            offset = 0
        elif t >= wins[-1][1]:
            offset = _length(wins)
        else:
            offset = sum(min(e, t) - s for s, e in wins if s < t)
        break
    # `d` is the working day holding t's position; walk to the target day.
    need = days - 1 if offset == 0 else days
    target = cal.windows(d)
    while need > 0:
        d = next(it)
        wins = cal.windows(d)
        if wins:
            target = wins
            need -= 1
    if offset == 0:
        return target[-1][1]
    return _at_offset(target, min(offset, _length(target)))


def resolve(cal: Calendar, business: Mapping[str, Any]) -> int:
    """Due time of a ``business`` payload: ``fraction`` (default 1) of the span after ``from``.

    ``KeyError``/``ValueError`` when the payload is malformed.
    """
    start = int(business["from"])
    fraction = float(business.get("fraction", 1.0))
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"business fraction {fraction} is outside [0, 1]")
    if business.get("duration_ms") is not None:
        return add(cal, start, round(int(business["duration_ms"]) * fraction))
    if business.get("days") is None:
        raise KeyError("business time needs 'duration_ms' or 'days'")
    end = add_days(cal, start, int(business["days"]))
    if fraction >= 1.0:
        return end
    return add(cal, start, round(between(cal, start, end) * fraction))
