"""Business calendars in the compacted ``calendars`` topic: read them, publish them.

Each record is keyed by the calendar's name and holds its JSON document
(:func:`headrace.core.calendar.parse_calendar` reads it, with ``updated_at`` and
``updated_by`` added by whoever wrote it); a tombstone deletes the calendar.
The timer service resolves business-time timers against the calendar as it is
when the timer is armed: changing a calendar later does not move timers that
are already armed.
"""

from __future__ import annotations

import getpass
import json
import time
from typing import Any

from headrace.compacted import CompactedMap
from headrace.core.calendar import Calendar, calendar_document, parse_calendar
from headrace.errors import ErrorCode, HeadraceError
from headrace.kafka import make_producer, produce_sync
from headrace.settings import Settings


def _decode(name: str, value: bytes) -> Calendar:
    doc = json.loads(value)
    if doc.get("name") != name:
        raise ValueError(f"record keyed {name!r} holds calendar {doc.get('name')!r}")
    return parse_calendar(doc)


class CalendarBook(CompactedMap[Calendar]):
    """Every calendar, by name, kept current from the ``calendars`` topic."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.topics.calendars, _decode, name="calendars")


def publish_calendar(settings: Settings, doc: dict[str, Any], *, by: str | None = None) -> Calendar:
    """Validate ``doc`` and write it to ``calendars``; returns the compiled calendar."""
    try:
        cal = parse_calendar(doc)
    except ValueError as exc:
        raise HeadraceError(ErrorCode.CONFIG_INVALID, str(exc)) from exc
    record = {
        **calendar_document(cal),
        "updated_at": int(time.time() * 1000),
        "updated_by": by or _user(),
    }
    producer = make_producer(settings, "headrace-calendar")
    produce_sync(producer, settings.topics.calendars, json.dumps(record).encode(), key=cal.name)
    return cal


def delete_calendar(settings: Settings, name: str) -> None:
    """Tombstone calendar ``name`` (timers armed against it keep their due times)."""
    producer = make_producer(settings, "headrace-calendar")
    produce_sync(producer, settings.topics.calendars, None, key=name)


def read_calendars(settings: Settings, timeout: float = 30.0) -> list[tuple[str, Calendar]]:
    """Every calendar in the topic now (for the CLI)."""
    with CalendarBook(settings) as book:
        book.wait_current(timeout)
        return book.items()


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
