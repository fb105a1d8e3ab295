"""Helpers for tests: waiting on a condition with a deadline instead of sleeping and hoping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    cond: Callable[[], T], timeout: float = 30.0, what: str = "condition", interval: float = 0.05
) -> T:
    """Call ``cond`` until it returns something truthy and return that; fail after ``timeout`` s.

    The failure names ``what`` and the last value (or exception) seen, so a
    timeout reads as a test failure about the behaviour, not a hang.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = cond()
        except Exception as exc:  # the condition may not be ready to evaluate yet
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)
