"""Cron expressions evaluated in a time zone: when does a schedule fire next?

Syntax: five fields ``minute hour day-of-month month day-of-week``, or six
with a leading ``second`` field (as in Quartz and Spring). Each field takes
``*`` (``?`` too, in the day fields), numbers, names (``jan``-``dec``,
``sun``-``sat``; ``7`` is Sunday as well), lists ``1,15``, ranges ``mon-fri``
and steps ``*/5``, ``10-40/10``, ``5/15``. Macros: ``@yearly`` (``@annually``),
``@monthly``, ``@weekly``, ``@daily`` (``@midnight``), ``@hourly``.

When both day fields are restricted, a day matches if *either* does (the
Vixie cron rule: ``0 9 1 * mon`` fires on the 1st and on every Monday).

Times are wall-clock times in the schedule's zone and map to instants by
:func:`headrace.core.localtime.to_instant`: on the night the clocks go forward,
a firing time that does not exist happens at the jump (02:30 → 03:00 CEST), and
several such times collapse into that one firing; on the night the clocks go
back, a time that occurs twice fires once, at its first occurrence.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from headrace.core.localtime import to_instant, to_local, zone

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
SECOND = timedelta(seconds=1)
SEARCH_YEARS = 8  # "30 2 30 2 *" (30 February) never fires: give up after this long


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS, 1),
    _Field("day-of-week", 0, 7, _DAYS, 0),
)


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed cron expression; ``text`` is what the user wrote."""

    text: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # Sunday 0
    any_day: bool  # day-of-month was '*'
    any_weekday: bool  # day-of-week was '*'

    def matches_date(self, d: date) -> bool:
        dom = d.day in self.days
        dow = d.isoweekday() % 7 in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return dow
        if self.any_weekday:
            return dom
        return dom or dow


def _value(text: str, f: _Field) -> int:
    t = text.strip().lower()
    if f.names and t[:3] in f.names and not t.isdigit():
        return f.names.index(t[:3]) + f.name_base
    if not t.isdigit():
        raise ValueError(f"{f.name} field: {text!r} is not a number" + _hint(f))
    v = int(t)
    if not f.low <= v <= f.high:
        raise ValueError(f"{f.name} field: {v} is outside {f.low}-{f.high}")
    return v


def _hint(f: _Field) -> str:
    return f" or a name ({f.names[0]}-{f.names[-1]})" if f.names else ""


def _parse_field(text: str, f: _Field) -> tuple[set[int], bool]:
    out: set[int] = set()
    star = False
    for part in text.split(","):
        if not part:
            raise ValueError(f"{f.name} field: empty list item in {text!r}")
        if any(c in part.upper() for c in "LW#") and part[:3].lower() not in (f.names or ()):
            raise ValueError(f"{f.name} field: {part!r} — L, W and # are not supported")
        rng, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{f.name} field: step {step_text!r} must be a positive number")
            step = int(step_text)
        if rng in ("*", "?"):
            lo, hi = f.low, f.high
            star = star or not step_text
        elif "-" in rng:
            a, b = rng.split("-", 1)
            lo, hi = _value(a, f), _value(b, f)
            if hi < lo:
                raise ValueError(f"{f.name} field: range {rng!r} runs backwards")
        else:
            lo = _value(rng, f)
            hi = f.high if step_text else lo
        out.update(range(lo, hi + 1, step))
    return out, star


def parse_cron(text: str) -> Cron:
    """Parse ``text``; ``ValueError`` says which field is wrong and why."""
    src = text.strip()
    expanded = MACROS.get(src.lower(), src)
    parts = expanded.split()
    if len(parts) == 5:
        parts = ["0", *parts]
    if len(parts) != 6:
        raise ValueError(
            f"cron {text!r} has {len(parts)} fields — write 'minute hour day month weekday' "
            "(optionally with a leading seconds field) or a macro like @daily"
        )
    try:
        fields = [_parse_field(p, f) for p, f in zip(parts, _FIELDS, strict=True)]
    except ValueError as exc:
        raise ValueError(f"cron {text!r}: {exc}") from None
    weekdays = {0 if d == 7 else d for d in fields[5][0]}
    return Cron(
        text=src,
        seconds=tuple(sorted(fields[0][0])),
        minutes=tuple(sorted(fields[1][0])),
        hours=tuple(sorted(fields[2][0])),
        days=frozenset(fields[3][0]),
        months=frozenset(fields[4][0]),
        weekdays=frozenset(weekdays),
        any_day=fields[3][1],
        any_weekday=fields[5][1],
    )


def _next_in(values: tuple[int, ...], v: int) -> int | None:
    i = bisect.bisect_left(values, v)
    return values[i] if i < len(values) else None


def next_match(cron: Cron, start: datetime) -> datetime | None:
    """The first wall time ``>= start`` (whole seconds) the expression matches, or None."""
    dt = start.replace(microsecond=0, tzinfo=None, fold=0)
    if start.microsecond:
        dt += SECOND
    limit = dt.year + SEARCH_YEARS
    while dt.year <= limit:
        if dt.month not in cron.months:
            dt = (dt.replace(day=28) + timedelta(days=4)).replace(day=1, hour=0, minute=0, second=0)
            continue
        if not cron.matches_date(dt.date()):
            dt = dt.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            continue
        h = _next_in(cron.hours, dt.hour)
        if h is None:
            dt = dt.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            continue
        if h != dt.hour:
            dt = dt.replace(hour=h, minute=0, second=0)
        m = _next_in(cron.minutes, dt.minute)
        if m is None:
            dt = dt.replace(minute=0, second=0) + timedelta(hours=1)
            continue
        if m != dt.minute:
            dt = dt.replace(minute=m, second=0)
        s = _next_in(cron.seconds, dt.second)
        if s is None:
            dt = dt.replace(second=0) + timedelta(minutes=1)
            continue
        return dt.replace(second=s)
    return None


def next_after(cron: Cron, timezone: str, t: int) -> int | None:
    """Epoch ms of the first firing strictly after instant ``t`` (None: it never fires again)."""
    tz = zone(timezone)
    start = to_local(t, tz).replace(microsecond=0) + SECOND
    while True:
        wall = next_match(cron, start)
        if wall is None:
            return None
        at = to_instant(wall, tz)
        if at > t:
            return at
        start = wall + SECOND


def firings(cron: Cron, timezone: str, after: int, until: int, limit: int = 1000) -> list[int]:
    """Firings in ``(after, until]``, oldest first, at most ``limit`` (the newest ones kept)."""
    out: list[int] = []
    t = after
    while True:
        nxt = next_after(cron, timezone, t)
        if nxt is None or nxt > until:
            return out
        out.append(nxt)
        if len(out) > limit:
            out.pop(0)
        t = nxt
