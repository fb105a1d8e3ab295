"""The signal service: correlation index, buffering until a run waits, broadcast.

Run it with ``headrace serve signals``; see docs/signals.md. Public surface:
:class:`SignalService` (the worker) and :class:`SignalSettings` (its tuning).
"""

from headrace.services.signals.config import SignalSettings
from headrace.services.signals.service import SignalService

__all__ = ["SignalService", "SignalSettings"]
