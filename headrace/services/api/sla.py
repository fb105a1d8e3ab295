"""``GET /stats/sla``: the SLA report and breach predictions over the view store.

Reads the step samples that ended in ``[since, until)`` — at most
``sample_budget`` of them — and the run views of the type (all types without
``type``) — the runs index, at most ``budget`` entries — (``truncated`` says
when either stopped early) and hands them to
:func:`headrace.core.views.sla.report`. Business-time deadlines of open steps
are resolved against the ``calendars`` topic (:class:`Deadlines`), as the timer
service resolves them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from headrace.core.calendar import resolve
from headrace.core.views import ACTIVE
from headrace.core.views.sla import ended_run, open_items, report
from headrace.services.api import store as keys
from headrace.services.api.store import ViewStore
from headrace.services.timers.calendars import CalendarBook
from headrace.settings import Settings

log = logging.getLogger("headrace.api")

SCAN_BUDGET = 20_000  # run index entries one report reads at most
SAMPLE_BUDGET = 200_000  # step samples one report reads at most


class Deadlines:
    """Business-time deadlines from the ``calendars`` topic, read from the first use on."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._book: CalendarBook | None = None
        self._lock = threading.Lock()

    def resolver(self, wait: float = 10.0) -> Callable[[dict[str, Any]], int | None]:
        """A ``resolve(business)`` for one report (blocking: starts the reader once)."""
        with self._lock:
            if self._book is None:
                book = CalendarBook(self.settings)
                try:
                    book.start(wait)
                except Exception as exc:  # the report goes on without business deadlines
                    log.warning("cannot read %s: %s", self.settings.topics.calendars, exc)
                    book.stop()
                    return lambda business: None
                self._book = book
            book = self._book

        def due(business: dict[str, Any]) -> int | None:
            cal = book.get(str(business.get("calendar")))
            if cal is None:
                return None
            try:
                return resolve(cal, business)
            except (KeyError, ValueError):
                return None

        return due

    def stop(self) -> None:
        with self._lock:
            if self._book is not None:
                self._book.stop()
                self._book = None


def sla_report(
    store: ViewStore,
    *,
    wtype: str | None,
    since: int | None,
    until: int | None,
    now: int,
    open_limit: int = 50,
    budget: int = SCAN_BUDGET,
    sample_budget: int = SAMPLE_BUDGET,
    deadline: Callable[[dict[str, Any]], int | None] | None = None,
) -> dict[str, Any]:
    def in_window(t: int) -> bool:
        return (since is None or t >= since) and (until is None or t < until)

    ended: list[dict[str, Any]] = []
    durations: dict[tuple[str, str | None], list[int]] = {}
    truncated = False
    for scanned, (_, value) in enumerate(store.scan(keys.sample_prefix(wtype)), 1):
        if scanned > sample_budget:
            truncated = True
            break
        s = keys.loads(value)
        if not in_window(s["ended_at"]):
            continue
        key = (s["type"], s["step"])
        if s.get("outcome") == "completed":
            durations.setdefault(key, []).append(int(s["duration_ms"]))
        if s.get("sla"):
            ended.append(s)
    live: list[dict[str, Any]] = []
    prefix = keys.type_prefix(wtype) if wtype is not None else keys.tenant_prefix(None)
    for scanned, (index_key, _) in enumerate(store.scan(prefix), 1):
        if scanned > budget:
            truncated = True
            break
        if index_key[:1] == b"r":
            view = store.run_at(index_key)
        else:
            _, tenant, run_id = keys.split(index_key)
            view = store.run(tenant, run_id)
        if view is None:
            continue
        if view["status"] in ACTIVE:
            live.extend(open_items(view))
            continue
        done = ended_run(view)
        if done is None or not in_window(view["ended_at"]):
            continue
        ended.append(done)
        if done["status"] == "completed":
            durations.setdefault((view["type"], None), []).append(done["duration_ms"])
    rows, predictions = report(ended, live, durations, now, deadline)
    return {
        "since": since,
        "until": until,
        "now": now,
        "steps": rows,
        "open": predictions[:open_limit],
        "open_total": len(predictions),
        "truncated": truncated,
    }
