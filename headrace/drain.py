"""Drains: stop accepting new runs of a workflow type or a tenant while in-flight runs finish.

A drain is a record on the compacted ``control`` topic keyed
``drain/type/<type>`` or ``drain/tenant/<tenant>`` (JSON ``{kind, name,
reason, actor, since}``); a tombstone on the same key lifts it (undrain).
:class:`DrainBook` follows the topic in a background thread (a
:class:`~headrace.compacted.CompactedMap`); the ingress router and the
orchestrator each hold one and refuse a start of a drained type or tenant:

* the router dead-letters the ``io.headrace.run.start`` CloudEvent (or the
  trigger's start) with ``HR-RUN-004`` and a reason naming the undrain command;
* the orchestrator dead-letters a ``StartRun`` that reached ``commands``
  another way (child starts, direct producers) the same way; a refused *call*
  child is reported to its waiting parent as a failed child (``ChildFinished``
  with status ``failed`` and code ``HR-RUN-004``), so the parent sees a
  catchable ``child.failed`` instead of waiting forever.

Commands to runs that exist are never refused: in-flight runs finish.
Services see a drain within their reader's poll latency (well under a
second); ``headrace_drains_active`` on their ``/metrics`` shows how many they
know of.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Gauge

from headrace.compacted import CompactedMap
from headrace.core.envelope import Command, CommandType, canonical_json
from headrace.errors import ErrorCode, HeadraceError
from headrace.kafka import make_producer, produce_sync
from headrace.settings import Settings

KINDS = ("type", "tenant")
KEY_PREFIX = "drain/"

DRAINS_ACTIVE = Gauge(
    "headrace_drains_active", "drains this process knows of (workflow types and tenants)"
)


@dataclass(frozen=True, slots=True)
class Drain:
    """One drain: new runs of workflow type (or tenant) ``name`` are refused."""

    kind: str  # "type" | "tenant"
    name: str
    reason: str | None = None
    actor: str | None = None
    since: int = 0  # epoch ms

    @property
    def key(self) -> str:
        return drain_key(self.kind, self.name)

    @property
    def flag(self) -> str:
        """The CLI flag that names it: ``--type order`` or ``--tenant acme``."""
        return f"--{self.kind} {self.name}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def refusal(self) -> str:
        """Why a start is refused, and how to accept starts again."""
        what = "workflow type" if self.kind == "type" else "tenant"
        since = datetime.fromtimestamp(self.since / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        who = f" by {self.actor}" if self.actor else ""
        why = f": {self.reason}" if self.reason else ""
        return (
            f"{what} {self.name!r} is draining (since {since}{who}{why}) — new runs are "
            f"refused while in-flight runs finish; `headrace undrain {self.flag}` accepts them "
            "again"
        )


def drain_key(kind: str, name: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"drain kind must be one of {KINDS}, not {kind!r}")
    return f"{KEY_PREFIX}{kind}/{name}"


def decode_drain(key: str, value: bytes) -> Drain:
    """A ``control`` record as a :class:`Drain` (``ValueError`` if it is not one)."""
    if not key.startswith(KEY_PREFIX):
        raise ValueError(f"not a drain record: {key!r}")
    raw = json.loads(value)
    drain = Drain(
        kind=str(raw["kind"]),
        name=str(raw["name"]),
        reason=raw.get("reason"),
        actor=raw.get("actor"),
        since=int(raw.get("since") or 0),
    )
    if drain.key != key:
        raise ValueError(f"drain record {key!r} names {drain.key!r}")
    return drain


class DrainBook:
    """The drains in force, read from the ``control`` topic and kept current."""

    def __init__(self, settings: Settings, *, name: str = "drains") -> None:
        self._map: CompactedMap[Drain | None] = CompactedMap(
            settings, settings.topics.control, _decode_or_skip, name=name
        )
        self._map.on_change(lambda key, value: DRAINS_ACTIVE.set(len(self.all())))

    def start(self, wait: float | None = 30.0) -> DrainBook:
        self._map.start(wait)
        return self

    def stop(self) -> None:
        self._map.stop()

    def wait_current(self, timeout: float = 30.0) -> None:
        self._map.wait_current(timeout)

    def all(self) -> list[Drain]:
        return [d for _, d in self._map.items() if d is not None]

    def get(self, kind: str, name: str) -> Drain | None:
        return self._map.get(drain_key(kind, name))

    def refusal(self, tenant: str, workflow_type: str) -> str | None:
        """Why a new run of ``workflow_type`` for ``tenant`` is refused, or None."""
        drain = self._map.get(drain_key("type", workflow_type)) or self._map.get(
            drain_key("tenant", tenant)
        )
        return None if drain is None else drain.refusal()

    def check(self, tenant: str, workflow_type: str) -> None:
        """Raise ``HeadraceError(DRAINING)`` if the start is refused."""
        refusal = self.refusal(tenant, workflow_type)
        if refusal is not None:
            raise HeadraceError(ErrorCode.DRAINING, refusal)

    def __enter__(self) -> DrainBook:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _decode_or_skip(key: str, value: bytes) -> Drain | None:
    # Other control records (future switches) are not drains: keep them out of the book.
    return decode_drain(key, value) if key.startswith(KEY_PREFIX) else None


# -- writing -------------------------------------------------------------------------


def put_drain(settings: Settings, drain: Drain) -> None:
    """Write ``drain`` to the ``control`` topic and wait for the acknowledgement."""
    produce_sync(
        make_producer(settings, "headrace-drain"),
        settings.topics.control,
        canonical_json(drain.to_json()).encode(),
        key=drain.key,
    )


def lift_drain(settings: Settings, kind: str, name: str) -> None:
    """Write the tombstone that lifts the drain of ``kind`` ``name``."""
    produce_sync(
        make_producer(settings, "headrace-drain"),
        settings.topics.control,
        None,
        key=drain_key(kind, name),
    )


def new_drain(kind: str, name: str, reason: str | None, actor: str | None) -> Drain:
    drain_key(kind, name)  # validates the kind
    return Drain(kind, name, reason, actor, int(time.time() * 1000))


def refused_start_notice(command: Command, message: str) -> Command | None:
    """The ``ChildFinished`` telling a waiting parent that its child's start was refused.

    ``None`` unless ``command`` is the ``StartRun`` of a ``call`` child (a parent
    with ``wait``). Its id is derived from the child's run id, like the notice a
    child that ran would send, so a redelivered refusal is ignored by the parent.
    """
    if command.type is not CommandType.StartRun:
        return None
    parent = command.payload.get("parent")
    if not isinstance(parent, dict) or not parent.get("wait"):
        return None
    return Command(
        command_id=f"{command.run_id}/finished",
        tenant=str(parent["tenant"]),
        run_id=str(parent["run_id"]),
        type=CommandType.ChildFinished,
        time=command.time,
        payload={
            "child_run_id": command.run_id,
            "status": "failed",
            "error": {"code": ErrorCode.DRAINING.code, "message": message},
        },
        causation_id=command.command_id,
        correlation_id=command.correlation_id,
        traceparent=command.traceparent,
    )
