"""The timer service: durable timers in RocksDB, cron schedules, business calendars.

Run it with ``headrace serve timers``; see docs/timers.md. Public surface:
:class:`TimerService` (the worker) and :class:`TimerSettings` (its tuning);
the CLI uses :mod:`.calendars` and :mod:`.schedules`. The worker is imported
lazily, so the CLI does not load faust to manage calendars and schedules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from headrace.services.timers.config import TimerSettings
    from headrace.services.timers.service import TimerService

__all__ = ["TimerService", "TimerSettings"]


def __getattr__(name: str) -> Any:
    if name == "TimerService":
        from headrace.services.timers.service import TimerService

        return TimerService
    if name == "TimerSettings":
        from headrace.services.timers.config import TimerSettings

        return TimerSettings
    raise AttributeError(name)
