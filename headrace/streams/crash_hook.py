"""The test-only crash hook of the stream processors.

``HEADRACE_CRASH_POINT=<point>`` makes a worker SIGKILL itself, with probability
``HEADRACE_CRASH_PROBABILITY``, when it reaches that point (e.g. the
orchestrator's ``after-events``, between writing a batch's events and its
snapshots). The crash tests use it to kill a worker exactly where a random
``kill -9`` rarely lands. Unset, it costs one comparison.
"""

from __future__ import annotations

import logging
import os
import random
import signal

log = logging.getLogger("headrace.streams")


class CrashHook:
    """``hook(point)``: die here if the environment asks for it."""

    def __init__(self) -> None:
        self.point = os.environ.get("HEADRACE_CRASH_POINT") or None
        self.probability = float(os.environ.get("HEADRACE_CRASH_PROBABILITY", "0") or 0)

    def __call__(self, point: str) -> None:
        if self.point != point or self.probability <= 0:
            return
        if random.random() < self.probability:
            log.warning("test crash hook: SIGKILL at %s", point)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)
