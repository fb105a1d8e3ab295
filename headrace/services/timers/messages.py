"""The ``timers`` topic's messages, validated once as they come in.

Canonical JSON with a ``headrace-op`` header, keyed by run key, on the run's
partition (:mod:`headrace.core.outbox` writes them). Every message names the
timer and its run: ``{"op", "timer_id", "tenant", "run_id", ...}``.

=========  =================================================================
``arm``    ``due`` (epoch ms) or ``business: {calendar, duration_ms | days,
           from[, fraction]}``; ``command``: the command to send when due
           (JSON, ``outbox.command_to_json``); optional ``purpose``, ``seq``
``cancel`` nothing more
``reset``  ``due`` or ``business``, optional ``seq``; optional ``command``
           (then an unknown id is armed — a heartbeat timeout can be reset
           without knowing whether it was armed yet)
``freeze`` ``at`` (the run's logical time of the suspension), ``policy``:
           ``freeze`` (keep the remaining time) or ``catch_up`` (keep the due
           time), ``seq``
``thaw``   ``at`` (the run's logical time of the resumption), ``seq``
=========  =================================================================

``seq`` is the run event that asked for the operation; a timer applies an
operation only if its ``seq`` is newer than the last one applied (replays).

A message may also carry several operations of one partition, in order:
``{"op": "batch", "ops": [<op>, <op>, ...]}``. The orchestrator groups the
timer operations of each batch of decisions this way (one Kafka message per
partition instead of one per timer): faust hands the service one message at a
time at a fixed cost, so batching is what lets arming keep up with a storm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from headrace.core.calendar import Calendar, always, resolve
from headrace.core.envelope import Command
from headrace.core.outbox import command_from_json

OPS = ("arm", "cancel", "reset", "freeze", "thaw")


@dataclass(frozen=True, slots=True)
class TimerOp:
    """One operation on one timer."""

    op: str
    timer_id: str
    tenant: str
    run_id: str
    due: int | None = None
    business: dict[str, Any] | None = None
    command: Command | None = None
    seq: int | None = None
    at: int | None = None
    policy: str = "freeze"

    @property
    def run_key(self) -> str:
        return f"{self.tenant}/{self.run_id}"


def _int(doc: dict[str, Any], name: str, required: bool = False) -> int | None:
    v = doc.get(name)
    if v is None:
        if required:
            raise ValueError(f"`{name}` is missing")
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"`{name}` must be a number (epoch ms), got {v!r}")
    return int(v)


def _str(doc: dict[str, Any], name: str) -> str:
    v = doc.get(name)
    if not isinstance(v, str) or not v:
        raise ValueError(f"`{name}` must be a non-empty string, got {v!r}")
    return v


def parse_ops(value: bytes | None) -> list[TimerOp]:
    """Validate one ``timers`` message (one op or a batch); ``ValueError`` says what is wrong."""
    if value is None:
        raise ValueError("empty message (a tombstone?) — `timers` carries operations only")
    try:
        doc = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("a timers message must be a JSON object")
    if doc.get("op") != "batch":
        return [_parse_doc(doc)]
    ops = doc.get("ops")
    if not isinstance(ops, list) or not ops:
        raise ValueError("a batch needs `ops`: a non-empty list of operations")
    out = []
    for i, item in enumerate(ops):
        if not isinstance(item, dict):
            raise ValueError(f"ops[{i}] must be a JSON object")
        try:
            out.append(_parse_doc(item))
        except ValueError as exc:
            raise ValueError(f"ops[{i}]: {exc}") from None
    return out


def parse_op(value: bytes | None) -> TimerOp:
    """Validate a ``timers`` message holding exactly one operation."""
    ops = parse_ops(value)
    if len(ops) != 1:
        raise ValueError(f"expected one operation, got a batch of {len(ops)}")
    return ops[0]


def _parse_doc(doc: dict[str, Any]) -> TimerOp:
    op = doc.get("op")
    if op not in OPS:
        raise ValueError(f"`op` is {op!r}; expected one of {', '.join(OPS)}")
    timer_id, tenant, run_id = _str(doc, "timer_id"), _str(doc, "tenant"), _str(doc, "run_id")
    command = None
    if doc.get("command") is not None or op == "arm":
        raw = doc.get("command")
        if not isinstance(raw, dict):
            raise ValueError("`command` must be the command to send, as JSON")
        try:
            command = command_from_json(raw)
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"`command` is not a command: {exc!r}") from None
    due = _int(doc, "due")
    business = doc.get("business")
    if op in ("arm", "reset") and due is None:
        if not isinstance(business, dict) or not isinstance(business.get("calendar"), str):
            raise ValueError(f"{op} needs `due` (epoch ms) or `business` {{calendar, ...}}")
        if business.get("duration_ms") is None and business.get("days") is None:
            raise ValueError("`business` needs `duration_ms` or `days`")
        _int(business, "from", required=True)
    policy = str(doc.get("policy") or "freeze")
    if op == "freeze" and policy not in ("freeze", "catch_up"):
        raise ValueError(f"`policy` is {policy!r}; expected freeze or catch_up")
    at = _int(doc, "at", required=op in ("freeze", "thaw"))
    return TimerOp(
        op,
        timer_id,
        tenant,
        run_id,
        due=due,
        business=business if isinstance(business, dict) else None,
        command=command,
        seq=_int(doc, "seq"),
        at=at,
        policy=policy,
    )


def due_of(op: TimerOp, calendar: Calendar | None) -> int:
    """The op's due time: ``due``, or its business time resolved in ``calendar``.

    ``calendar`` None (the named calendar does not exist) resolves the span as
    elapsed time (24x7): the caller logs and counts that.
    """
    if op.due is not None:
        return op.due
    assert op.business is not None
    return resolve(calendar or always(), op.business)
