"""Run data: JSON values that the decider never mutates in place.

Values in a run's state are shared freely between flows and with the payloads
of events already emitted, so every change builds new containers along the
changed path (:func:`place`) instead of editing the old ones.

Values entering the state go through :func:`canon`, which copies them with
object keys in sorted order: events are canonical JSON on the wire (sorted
keys), so a state rebuilt from decoded events and a state built live must
hold the same key order, or a jq ``to_entries`` would answer differently after
a replay.
"""

from __future__ import annotations

import math
from datetime import datetime
from functools import lru_cache
from typing import Any

from headrace.core.decider.errors import EXPRESSION_FAILED, StepError

_LEAVES = frozenset({str, int, bool, type(None)})


def canon(value: Any) -> Any:
    """A copy of a JSON value with sorted object keys; NaN and infinities become null."""
    t = type(value)
    if t is dict:
        out = {}
        for k in sorted(value):
            v = value[k]
            out[k] = v if type(v) in _LEAVES else canon(v)
        return out
    if t is list or t is tuple:
        return [v if type(v) in _LEAVES else canon(v) for v in value]
    if t is float:
        return value if math.isfinite(value) else None
    if t in _LEAVES:
        return value
    return _plain(value)


def _plain(value: Any) -> Any:
    """Subclasses of JSON types (enums, ...) become the plain type; anything else its text."""
    for base in (bool, int, str):
        if isinstance(value, base):
            return base(value)
    if isinstance(value, float):
        return canon(float(value))
    if isinstance(value, dict):
        return canon(dict(value))
    if isinstance(value, list | tuple):
        return canon(list(value))
    return str(value)


@lru_cache(maxsize=4096)
def path_of(into: str) -> tuple[str, ...]:
    """``'order.payment'`` or ``'.order.payment'`` → ``('order', 'payment')``; ``''`` → ``()``."""
    return tuple(p for p in into.split(".") if p)


def check_place(data: Any, into: str | None) -> None:
    """Raise ``StepError(expression.failed)`` if a value cannot be placed at ``into``."""
    if not into or (type(data) is dict and "." not in into):
        return
    node = data
    for key in path_of(into):
        if node is None:
            return
        if type(node) is not dict:
            raise StepError(
                EXPRESSION_FAILED,
                f"cannot place a result at {into!r}: {key!r} is below a "
                f"{type(node).__name__}, not an object — choose another `into` path",
            )
        node = node.get(key)


def _set_path(node: Any, path: tuple[str, ...], value: Any) -> Any:
    if not path:
        return value
    base = node if type(node) is dict else {}
    out = dict(base)
    out[path[0]] = _set_path(base.get(path[0]), path[1:], value)
    return out


def place(data: Any, value: Any, into: str | None) -> Any:
    """New data with ``value`` placed: at path ``into``; ``''`` replaces the data;
    ``None`` shallow-merges an object result into object data (other results are dropped)."""
    if into is None:
        if type(value) is not dict:
            return data
        if type(data) is not dict:
            return value
        if not value:
            return data
        merged = dict(data)
        merged.update(value)
        return merged
    return _set_path(data, path_of(into), value)


def epoch_ms(value: Any) -> int:
    """A ``wait.until`` value — epoch milliseconds or an ISO 8601 time — as epoch ms."""
    if isinstance(value, bool):
        raise StepError(EXPRESSION_FAILED, f"'until' gave {value!r}, not a time")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise StepError(
                EXPRESSION_FAILED,
                f"'until' gave {value!r}, which is not ISO 8601 (e.g. 2026-05-01T09:00:00Z)",
            ) from None
        if moment.tzinfo is None:
            raise StepError(
                EXPRESSION_FAILED,
                f"'until' gave {value!r} without a time zone — add 'Z' or an offset",
            )
        return int(moment.timestamp() * 1000)
    raise StepError(
        EXPRESSION_FAILED,
        f"'until' gave a {type(value).__name__}; expected epoch ms or an ISO 8601 string",
    )
