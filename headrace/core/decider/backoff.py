"""Retry backoff with deterministic jitter.

The delay after failed attempt ``n`` (1-based) is
``min(max_backoff, initial_backoff * multiplier**(n-1))`` spread by ``±jitter``;
the spread comes from ``sha256(task_id#n)`` instead of a random generator, so a
replay — or another orchestrator instance — computes the same delay.
"""

from __future__ import annotations

import hashlib

from headrace.core.dsl.model import RetryPolicy
from headrace.core.durations import parse_duration


def unit_interval(seed: str) -> float:
    """A number in [0, 1) derived from ``seed``."""
    return int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") / 2**64


def backoff_ms(policy: RetryPolicy, attempt: int, seed: str) -> int:
    """Delay before the attempt after failed attempt ``attempt``."""
    initial = parse_duration(policy.initial_backoff)
    ceiling = parse_duration(policy.max_backoff)
    try:
        base = min(float(ceiling), initial * policy.multiplier ** (attempt - 1))
    except OverflowError:
        base = float(ceiling)
    if policy.jitter:
        base *= 1.0 + policy.jitter * (2.0 * unit_interval(f"{seed}#{attempt}") - 1.0)
    return max(0, round(base))


def policy_payload(policy: RetryPolicy) -> dict[str, object]:
    """The retry policy as carried on ``TaskScheduled`` (durations in ms)."""
    return {
        "max_attempts": policy.max_attempts,
        "initial_backoff_ms": parse_duration(policy.initial_backoff),
        "max_backoff_ms": parse_duration(policy.max_backoff),
        "multiplier": policy.multiplier,
        "jitter": policy.jitter,
        "non_retryable": list(policy.non_retryable),
        "on_exhausted": policy.on_exhausted,
    }
