"""The ``signals`` topic's messages, validated once as they come in.

Canonical JSON with a ``headrace-op`` header, keyed by the *address* they
concern, ``<tenant>/<correlation key or run id>``, on partition
``murmur2(key) % P``; :mod:`headrace.core.outbox` writes every one of them
(``signal_message``), for the orchestrator, the ingress router, the CLI and the
API alike. docs/signals.md has the full vocabulary:

=============  ==================================================================
``await``      a run waits: ``wait_id, tenant, run_id, signal, correlation,
               index: correlation | run, time``
``cancel_wait`` the wait ended: the same fields plus ``reason: received |
               timed_out | cancelled`` and, when received, ``signal_id``
``signal``     ``signal_id, signal, tenant, run_id | correlation, data, time[,
               traceparent]``
``broadcast``  ``signal_id, signal, type[, tenant][, filter], data, time[,
               traceparent]``
=============  ==================================================================
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from headrace.core.outbox import signal_address

OPS = ("await", "cancel_wait", "signal", "broadcast")
REASONS = ("received", "timed_out", "cancelled")


@dataclass(frozen=True, slots=True)
class WaitOp:
    """``await`` or ``cancel_wait``: one wait of one run, seen at one of its addresses."""

    op: str
    wait_id: str
    tenant: str
    run_id: str
    signal: str | None
    correlation: str
    index: str  # "correlation" | "run": which of the wait's addresses this copy is for
    time: int = 0
    reason: str = "cancelled"
    signal_id: str | None = None  # the signal a received wait took

    @property
    def address(self) -> str:
        return signal_address(self.tenant, self.run_id if self.index == "run" else self.correlation)


@dataclass(frozen=True, slots=True)
class SignalOp:
    """A signal for one run (``run_id``) or for every run waiting on ``correlation``."""

    signal_id: str
    signal: str
    tenant: str
    data: Any
    time: int
    run_id: str | None = None
    correlation: str | None = None
    traceparent: str | None = None

    op = "signal"

    @property
    def address(self) -> str:
        name = self.run_id if self.run_id is not None else self.correlation
        assert name is not None
        return signal_address(self.tenant, name)


@dataclass(frozen=True, slots=True)
class BroadcastOp:
    """One signal for every running run of ``type`` (of ``tenant``; input passing ``filter``)."""

    signal_id: str
    signal: str
    type: str
    data: Any
    time: int
    tenant: str | None = None
    filter: str | None = None
    traceparent: str | None = None

    op = "broadcast"


Op = WaitOp | SignalOp | BroadcastOp


def _str(doc: dict[str, Any], name: str, *, optional: bool = False) -> Any:
    v = doc.get(name)
    if v is None and optional:
        return None
    if not isinstance(v, str) or not v:
        raise ValueError(f"`{name}` must be a non-empty string, got {v!r}")
    try:
        v.encode()
    except UnicodeEncodeError:
        # JSON allows "\ud800"; keys and RocksDB records are UTF-8.
        raise ValueError(f"`{name}` is not valid Unicode (a lone surrogate?): {v!r}") from None
    return v


def _int(doc: dict[str, Any], name: str, default: int | None = None) -> int:
    v = doc.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"`{name}` must be a number (epoch ms), got {v!r}")
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"`{name}` must be a finite number (epoch ms), got {v!r}")
    return int(v)


def parse_op(value: bytes | None) -> Op:
    """Validate one ``signals`` message; ``ValueError`` says what is wrong with it."""
    if value is None:
        raise ValueError("empty message (a tombstone?) — `signals` carries operations only")
    try:
        doc = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    except RecursionError:
        raise ValueError("not JSON this service reads: nested too deeply") from None
    if not isinstance(doc, dict):
        raise ValueError("a signals message must be a JSON object")
    op = doc.get("op")
    if op == "signal":
        run_id, correlation = _str(doc, "run_id", optional=True), None
        if run_id is None:
            correlation = _str(doc, "correlation")
        elif doc.get("correlation") is not None:
            raise ValueError("a signal names exactly one of `run_id` and `correlation`")
        return SignalOp(
            _str(doc, "signal_id"),
            _str(doc, "signal"),
            _str(doc, "tenant"),
            doc.get("data"),
            _int(doc, "time"),
            run_id,
            correlation,
            _str(doc, "traceparent", optional=True),
        )
    if op in ("await", "cancel_wait"):
        index = doc.get("index", "correlation")
        if index not in ("correlation", "run"):
            raise ValueError(f"`index` is {index!r}; expected correlation or run")
        reason = doc.get("reason", "cancelled")
        if reason not in REASONS:
            raise ValueError(f"`reason` is {reason!r}; expected one of {', '.join(REASONS)}")
        return WaitOp(
            op,
            _str(doc, "wait_id"),
            _str(doc, "tenant"),
            _str(doc, "run_id"),
            _str(doc, "signal", optional=op == "cancel_wait"),
            _str(doc, "correlation"),
            index,
            _int(doc, "time", 0),
            reason,
            _str(doc, "signal_id", optional=True),
        )
    if op == "broadcast":
        return BroadcastOp(
            _str(doc, "signal_id"),
            _str(doc, "signal"),
            _str(doc, "type"),
            doc.get("data"),
            _int(doc, "time"),
            _str(doc, "tenant", optional=True),
            _str(doc, "filter", optional=True),
            _str(doc, "traceparent", optional=True),
        )
    raise ValueError(f"`op` is {op!r}; expected one of {', '.join(OPS)}")
