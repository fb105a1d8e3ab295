"""Wall-clock times in a time zone as instants, with one rule for DST gaps and folds.

Business calendars ("09:00-17:00 in Europe/Paris") and cron schedules ("at
02:30 every day") are written in local wall-clock time; timers fire at
instants (epoch milliseconds). A wall time maps to **the earliest instant at
which the zone's clock shows that time or later**:

* a time that occurs twice (autumn fold) maps to its first occurrence;
* a time that does not occur (spring gap) maps to the instant the clock jumps
  over it — 02:30 on the night Paris goes from 02:00 to 03:00 is 03:00 CEST.

The map is monotonic (a later wall time never maps to an earlier instant),
which is what lets the calendar maths treat working windows as ordered,
non-overlapping intervals and lets cron pick "the next firing after t".
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MS = 1000
DAY = timedelta(days=1)


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ``ValueError`` naming the zone when it is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r} — use an IANA name like 'Europe/Paris' or 'UTC'"
        ) from exc


def to_local(ms: int, tz: ZoneInfo) -> datetime:
    """The wall-clock time (naive) the zone shows at instant ``ms``."""
    return datetime.fromtimestamp(ms / MS, tz).replace(tzinfo=None)


def _wall(ms: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ms / MS, tz).replace(tzinfo=None, fold=0)


def to_instant(wall: datetime, tz: ZoneInfo) -> int:
    """Epoch ms of the earliest instant whose wall time in ``tz`` is ``wall`` or later."""
    naive = wall.replace(tzinfo=None, fold=0)
    first = int(naive.replace(tzinfo=tz, fold=0).timestamp() * MS)
    if _wall(first, tz) == naive:
        return first
    # In a gap: fold=0 used the offset before the jump (too late), fold=1 the one
    # after it (too early); the jump lies between. Search it to the millisecond.
    lo = int(naive.replace(tzinfo=tz, fold=1).timestamp() * MS)
    hi = first
    if lo > hi:
        lo, hi = hi, lo
    while lo < hi:
        mid = (lo + hi) // 2
        if _wall(mid, tz) >= naive:
            hi = mid
        else:
            lo = mid + 1
    return hi


def local_date(ms: int, tz: ZoneInfo) -> date:
    """The calendar date the zone shows at instant ``ms``."""
    return to_local(ms, tz).date()


def midnight(d: date) -> datetime:
    """00:00 of ``d`` as a naive wall time."""
    return datetime(d.year, d.month, d.day)


def utc_iso(ms: int) -> str:
    """``2026-03-29T01:00:00Z`` — for ids and messages meant for people."""
    text = datetime.fromtimestamp(ms / MS, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z").replace(".000Z", "Z")
