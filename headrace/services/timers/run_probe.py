"""Whether a schedule's last run still runs, asked of the query API.

The ``skip`` and ``buffer_one`` overlap policies need it. The timer service
has no run state of its own, so it asks ``headrace serve api``
(``GET /runs/{tenant}/{run_id}``, HEADRACE_API_URL). When the API cannot say —
not reachable, or the run not indexed yet — the answer is ``None`` and the
schedule fires as if the run had finished (counted by
``headrace_schedule_overlap_unknown_total``). After a failed call the API is
left alone for a while, so an absent API costs one refused connection per
``quiet`` seconds, not one per tick.
"""

from __future__ import annotations

import logging
import threading
import time

from headrace.core.views import TERMINAL
from headrace.errors import ErrorCode, HeadraceError
from headrace.services.api.client import ApiClient
from headrace.services.timers.schedules import ScheduleSpec

log = logging.getLogger("headrace.schedules")


class ApiRunProbe:
    """A :data:`~headrace.services.timers.scheduler.RunProbe` backed by the query API."""

    def __init__(
        self, url: str | None = None, *, timeout: float = 2.0, quiet: float = 30.0
    ) -> None:
        self.client = ApiClient(url, timeout=timeout)
        self.quiet = quiet
        self._down_until = 0.0
        self._lock = threading.Lock()

    def __call__(self, spec: ScheduleSpec, run_id: str) -> bool | None:
        if time.monotonic() < self._down_until:
            return None
        try:
            with self._lock:  # httpx.Client is not meant to be shared across threads
                run = self.client.run(spec.tenant, run_id)
        except HeadraceError as exc:
            if exc.code is ErrorCode.RUN_NOT_FOUND:
                return None  # started a moment ago and not indexed yet, or never started
            self._down_until = time.monotonic() + self.quiet
            log.warning(
                "cannot ask the query API whether schedule %s's last run %s still runs: %s",
                spec.name,
                run_id,
                exc.message,
            )
            return None
        status = run.get("status")
        return None if status is None else status not in TERMINAL

    def close(self) -> None:
        self.client.close()
