"""The task service: dispatch, leases, timeouts, heartbeats, priority bands, DLQ, redrive.

Run it with ``headrace serve tasks``; docs/tasks.md has the worker protocol.
Public surface: :class:`TaskService` (the worker) and :class:`TaskSettings`
(its tuning); :mod:`.dlq` reads and writes the queues' DLQs for ``headrace dlq``.
"""

from headrace.services.tasks.config import TaskSettings
from headrace.services.tasks.service import TaskService

__all__ = ["TaskService", "TaskSettings"]
