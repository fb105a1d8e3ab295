"""One address of the signal service: the runs waiting there and the signals kept for them.

An *address* is ``<tenant>/<name>``, where ``name`` is a correlation key or a
run id (a ``wait_signal`` without ``correlation`` waits on its run id, so a
run's own address is its run key). Everything about an address — the waits
registered there, the signals buffered there, the signal ids and wait ids it
remembers to drop duplicates — is **one record**, so one RocksDB value and one
changelog record change atomically with every batch, and ``applied`` (the
offset of the last ``signals`` message folded in) makes a redelivered message a
no-op.

The rules, all decided here and nowhere else (this module is pure; the service
feeds it messages and turns :class:`Delivery` values into ``DeliverSignal``
commands):

* a **signal** is offered to every free wait that matches it (same signal
  name; for a correlation signal the wait's correlation key, for a
  run-addressed signal the wait's run — and then only the oldest such wait);
  with no free wait it is buffered until ``time + ttl``;
* an **await** registers the wait and offers it the oldest buffered signal that
  matches and is not on offer elsewhere;
* a signal on offer stays in the buffer until the wait's **cancel** comes back
  from the orchestrator: ``received`` with this signal's id means it was taken
  (forgotten; its id remembered against duplicates); any other end (the wait
  timed out, was cancelled, or took another signal first) hands it back — to
  the next free wait, or to the buffer, at its old place in arrival order.

A wait holds at most one offer at a time, so buffered signals reach
consecutive waits in the order they arrived. Times are the Kafka record
timestamps of the messages, so folding the same messages again decides the
same (and the commands get the same ids).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from headrace.core.envelope import Command, CommandType
from headrace.services.signals.messages import SignalOp, WaitOp


@dataclass(frozen=True, slots=True)
class Rules:
    """The service's tuning the decisions depend on."""

    ttl: int  # ms a signal nobody waits for is kept
    dedupe_window: int  # ms a taken signal id / an ended wait id is remembered
    remembered: int = 1000  # most ids of each kind remembered per address


@dataclass(slots=True)
class Tally:
    """What a batch of decisions did, for the metrics."""

    offered: int = 0
    buffered: int = 0
    taken: int = 0
    returned: int = 0
    expired: int = 0
    duplicates: int = 0


@dataclass(slots=True)
class Wait:
    """A run waiting at this address (``holding``: the seq of the signal on offer to it)."""

    id: str
    tenant: str
    run_id: str
    signal: str
    correlation: str
    seq: int
    time: int = 0
    holding: int | None = None


@dataclass(slots=True)
class Buffered:
    """A signal kept at this address, in arrival order (``seq``: its ``signals`` offset)."""

    seq: int
    id: str
    signal: str
    tenant: str
    data: Any
    time: int
    expires: int
    run_id: str | None = None
    correlation: str | None = None
    traceparent: str | None = None
    offered: list[str] = field(default_factory=list)

    def matches(self, w: Wait) -> bool:
        if self.signal != w.signal:
            return False
        if self.run_id is not None:
            return self.run_id == w.run_id
        return self.correlation == w.correlation


@dataclass(frozen=True, slots=True)
class Delivery:
    """Offer ``signal`` to ``wait``: a ``DeliverSignal`` command to the wait's run."""

    signal: Buffered
    wait: Wait

    @property
    def command_id(self) -> str:
        return f"{self.signal.id}/{self.wait.id}"

    def command(self, now: int) -> Command:
        s, w = self.signal, self.wait
        return Command(
            command_id=self.command_id,
            tenant=w.tenant,
            run_id=w.run_id,
            type=CommandType.DeliverSignal,
            time=now,
            payload={"signal": s.signal, "data": s.data, "wait_id": w.id, "signal_id": s.id},
            causation_id=s.id,
            traceparent=s.traceparent,
        )


@dataclass(slots=True)
class Address:
    """The record of one address (see the module docstring)."""

    name: str
    applied: int = -1
    waits: dict[str, Wait] = field(default_factory=dict)  # in registration order
    buffer: dict[int, Buffered] = field(default_factory=dict)  # in arrival order
    seen: dict[str, int] = field(default_factory=dict)  # signal id -> forget at
    ended: dict[str, int] = field(default_factory=dict)  # wait id -> forget at
    indexed: int | None = None  # the expiry this address is filed under for the sweep

    # -- decisions -------------------------------------------------------------------

    def signal(self, op: SignalOp, seq: int, now: int, rules: Rules, t: Tally) -> list[Delivery]:
        self.expire(now, rules, t)
        if op.signal_id in self.seen or any(b.id == op.signal_id for b in self.buffer.values()):
            t.duplicates += 1
            return []
        b = Buffered(
            seq,
            op.signal_id,
            op.signal,
            op.tenant,
            op.data,
            op.time,
            op.time + rules.ttl,
            op.run_id,
            op.correlation,
            op.traceparent,
        )
        self.buffer[seq] = b
        out = self._place(b, now, rules, t)
        if not out and b.seq in self.buffer:
            t.buffered += 1
        return out

    def await_(self, op: WaitOp, seq: int, now: int, rules: Rules, t: Tally) -> list[Delivery]:
        self.expire(now, rules, t)
        if op.wait_id in self.waits or op.wait_id in self.ended or op.signal is None:
            t.duplicates += 1
            return []
        w = Wait(op.wait_id, op.tenant, op.run_id, op.signal, op.correlation, seq, op.time)
        self.waits[w.id] = w
        for b in self.buffer.values():
            if not b.offered and b.matches(w):
                return [self._offer(b, w, t)]
        return []

    def cancel(self, op: WaitOp, now: int, rules: Rules, t: Tally) -> list[Delivery]:
        self.expire(now, rules, t)
        if op.wait_id in self.ended:
            t.duplicates += 1
        _remember(self.ended, op.wait_id, now + rules.dedupe_window, rules.remembered)
        w = self.waits.pop(op.wait_id, None)
        if w is None or w.holding is None:
            return []
        b = self.buffer.get(w.holding)
        if b is None:
            return []  # another wait took it
        if w.id in b.offered:
            b.offered.remove(w.id)
        if op.reason == "received" and op.signal_id == b.id:
            self._forget(b, now, rules)
            t.taken += 1
            return []
        if b.offered:
            return []  # still on offer to other waits
        t.returned += 1
        return self._place(b, now, rules, t)

    def expire(self, now: int, rules: Rules, t: Tally) -> None:
        """Drop buffered signals past their expiry (not those on offer) and stale memory."""
        if self.seen:
            self.seen = {k: v for k, v in self.seen.items() if v > now}
        if self.ended:
            self.ended = {k: v for k, v in self.ended.items() if v > now}
        for b in [b for b in self.buffer.values() if not b.offered and b.expires <= now]:
            self._forget(b, now, rules)
            t.expired += 1

    def _place(self, b: Buffered, now: int, rules: Rules, t: Tally) -> list[Delivery]:
        targets = [w for w in self.waits.values() if w.holding is None and b.matches(w)]
        if b.run_id is not None:
            targets = targets[:1]  # a run-addressed signal is for one wait
        if not targets and b.expires <= now:
            self._forget(b, now, rules)
            t.expired += 1
        return [self._offer(b, w, t) for w in targets]

    def _offer(self, b: Buffered, w: Wait, t: Tally) -> Delivery:
        w.holding = b.seq
        b.offered.append(w.id)
        t.offered += 1
        return Delivery(b, w)

    def _forget(self, b: Buffered, now: int, rules: Rules) -> None:
        del self.buffer[b.seq]
        _remember(self.seen, b.id, now + rules.dedupe_window, rules.remembered)

    # -- the record ------------------------------------------------------------------

    @property
    def empty(self) -> bool:
        return not (self.waits or self.buffer or self.seen or self.ended)

    def next_expiry(self) -> int | None:
        """When the sweep must look at this address again (``None``: never)."""
        times = [b.expires for b in self.buffer.values() if not b.offered]
        times.extend(self.seen.values())
        times.extend(self.ended.values())
        return min(times) if times else None

    def to_bytes(self) -> bytes:
        doc = {
            "applied": self.applied,
            "waits": [
                [w.id, w.tenant, w.run_id, w.signal, w.correlation, w.seq, w.time, w.holding]
                for w in self.waits.values()
            ],
            "buffer": [
                {
                    "seq": b.seq,
                    "id": b.id,
                    "signal": b.signal,
                    "tenant": b.tenant,
                    "data": b.data,
                    "time": b.time,
                    "expires": b.expires,
                    "run_id": b.run_id,
                    "correlation": b.correlation,
                    "traceparent": b.traceparent,
                    "offered": b.offered,
                }
                for b in self.buffer.values()
            ],
            "seen": self.seen,
            "ended": self.ended,
            "indexed": self.indexed,
        }
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, name: str, raw: bytes) -> Address:
        doc = json.loads(raw)
        waits = {row[0]: Wait(*row) for row in doc["waits"]}
        buffer = {b["seq"]: Buffered(**b) for b in doc["buffer"]}
        return cls(
            name, doc["applied"], waits, buffer, doc["seen"], doc["ended"], doc.get("indexed")
        )


def _remember(memory: dict[str, int], key: str, until: int, most: int) -> None:
    memory.pop(key, None)
    memory[key] = until
    while len(memory) > most:
        del memory[next(iter(memory))]
