"""The signal service: a faust worker over ``signals`` with the correlation index in RocksDB.

For each batch of ``signals`` messages (``take_events``, concurrency 1):

1. every message is validated (:mod:`.messages`; an unreadable one goes to
   ``dlq`` with the reason in headers) and folded into the record of its
   address (:mod:`.address`), loaded once per batch — awaits register waits,
   signals are offered or buffered, cancels take or hand back offers;
   broadcasts are resolved through the query API (:mod:`.broadcast`);
2. the resulting ``DeliverSignal`` commands (and dead letters) are produced and
   awaited (idempotent producer, ``acks=all``);
3. only then the touched address records are written — one RocksDB write per
   partition — and their changelog records sent and awaited, so faust commits
   the batch's offsets only past state that is in Kafka.

A crash anywhere loses nothing: before step 3 the messages are delivered again
and decided again from the same records (times are record timestamps), giving
the same commands with the same ids, which the orchestrator applies once; after
it, each record's ``applied`` offset makes them no-ops (and re-sends the record
to the changelog, in case the crash kept it from Kafka).

A message on a partition other than its address's (a producer that hashed the
key differently) is forwarded to the right one. The **sweep**
(:meth:`SignalService.sweep`, every ``HEADRACE_SIGNAL_SWEEP_INTERVAL``) drops
buffered signals past their expiry and ids remembered long enough, walking the
expiry index of the partitions this worker owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from headrace.core.outbox import Outgoing, command_message, signal_partition
from headrace.errors import ErrorCode, HeadraceError
from headrace.services.signals import metrics
from headrace.services.signals.address import Address, Delivery, Rules, Tally
from headrace.services.signals.book import AddressBook, split_expiry_key
from headrace.services.signals.broadcast import Broadcaster
from headrace.services.signals.config import SignalSettings
from headrace.services.signals.messages import BroadcastOp, SignalOp, parse_op
from headrace.settings import Settings
from headrace.streams.app import make_app
from headrace.streams.batched_store import BatchedChangelogStore
from headrace.streams.producer import AsyncProducer

log = logging.getLogger("headrace.signals")

TABLE = "addresses"
# Test hook (the crash tests): HEADRACE_CRASH_POINT=signals-after-commands makes the
# worker SIGKILL itself, with probability HEADRACE_CRASH_PROBABILITY, once a batch's
# commands are acknowledged and before its records are written; signals-after-write
# once they are written to RocksDB and before their changelog records are sent.
CRASH_POINTS = ("signals-after-commands", "signals-after-write")


@dataclass(slots=True)
class _Work:
    """What one batch produces, before anything is written."""

    addresses: dict[int, dict[str, Address]] = field(default_factory=dict)
    out: list[Outgoing] = field(default_factory=list)
    broadcasts: list[tuple[Any, BroadcastOp, int]] = field(default_factory=list)
    delivered: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    tally: Tally = field(default_factory=Tally)
    targets: int = 0


class SignalService:
    """One signal-service worker. ``run()`` blocks until SIGTERM."""

    def __init__(
        self,
        settings: Settings,
        *,
        instance: str = "0",
        web_port: int | None = None,
        config: SignalSettings | None = None,
    ) -> None:
        self.settings = settings
        self.config = config or SignalSettings()
        self.topics = settings.topics
        self.routing = settings.routing
        self.rules = Rules(
            self.config.buffer_ttl, self.config.dedupe_window, self.config.remembered
        )
        self.app = make_app(settings, "signals", instance=instance, web_port=web_port)
        self.source = self.app.topic(
            self.topics.signals,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
        )
        # bytes key and value types make faust use the raw serializers.
        self.table = self.app.Table(
            TABLE, key_type=bytes, value_type=bytes, partitions=settings.partitions
        )
        self.store = BatchedChangelogStore(self.table)
        self.book = AddressBook(self.store)
        self.broadcaster = Broadcaster(self.config, self.routing)
        self.producer: AsyncProducer | None = None
        self.active: set[int] = set()
        self._crash_point = os.environ.get("HEADRACE_CRASH_POINT") or None
        self._crash_probability = float(os.environ.get("HEADRACE_CRASH_PROBABILITY", "0") or 0)
        # The agent and the sweep both rewrite address records: one at a time.
        self.lock = asyncio.Lock()
        self.app.agent(self.source, concurrency=1, name="signals")(self._agent)
        self.app.task(self._sweep_loop)
        # faust's Signal.connect is typed for a keyword-only `signal` argument.
        self.app.on_rebalance_complete.connect(self._on_rebalance_complete)  # type: ignore[arg-type]
        self.app.on_partitions_revoked.connect(self._on_partitions_revoked)  # type: ignore[arg-type]

    def _producer(self) -> AsyncProducer:
        assert self.producer is not None, "start_clients() first"
        return self.producer

    # -- life cycle ------------------------------------------------------------

    def start_clients(self) -> None:
        if self.producer is None:
            self.producer = AsyncProducer(self.settings, "headrace-signals")

    async def _on_rebalance_complete(self, sender: Any = None, **_: Any) -> None:
        """The partitions we own now, their tables recovered: sweep them from now on."""
        self.active = {
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == self.topics.signals
        }
        metrics.ACTIVE_PARTITIONS.set(len(self.active))
        log.info("owning partitions", extra={"partitions": sorted(self.active)})

    async def _on_partitions_revoked(self, sender: Any, revoked: Any = None, **_: Any) -> None:
        gone = {tp.partition for tp in revoked or () if tp.topic == self.topics.signals}
        # A batch or sweep in hand finishes first: its writes belong to these databases.
        # (After 30 s we go on regardless; faust would otherwise kick us out of the group.)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30), self.lock:
                pass
        self.active -= gone
        metrics.ACTIVE_PARTITIONS.set(len(self.active))
        # Changelog records go out before the next owner recovers the partitions.
        await self._flush()

    # -- the batch -------------------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        async for batch in stream.take_events(self.config.batch, within=self.config.batch_within):
            await self.process(batch)

    async def process(self, events: Iterable[Any]) -> None:
        """Fold a batch of ``signals`` messages and write everything it causes."""
        started = time.perf_counter()
        async with self.lock:
            work = _Work()
            for ev in events:
                self._fold(ev.message, work)
            for msg, op, now in work.broadcasts:
                await self._broadcast(msg, op, now, work)
            await self._send(work.out)
            self._maybe_crash("signals-after-commands")
            for p, addresses in work.addresses.items():
                self.book.save(p, addresses.values())
            self._maybe_crash("signals-after-write")
            await self._flush()
        self._count(work)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)

    def _fold(self, msg: Any, work: _Work) -> None:
        try:
            op = parse_op(msg.value)
        except ValueError as exc:
            work.out.append(self._dead_letter(msg, ErrorCode.DECODE_FAILED, str(exc)))
            return
        now = int((msg.timestamp or time.time()) * 1000)
        if isinstance(op, BroadcastOp):
            work.broadcasts.append((msg, op, now))
            return
        p: int = msg.partition
        name = op.address
        home = signal_partition(name, self.settings.partitions)
        if home != p:
            work.out.append(
                Outgoing(self.topics.signals, msg.value, name, home, list(msg.headers or ()))
            )
            work.outcomes[(op.op, "forwarded")] += 1
            return
        addresses = work.addresses.setdefault(p, {})
        a = addresses.get(name)
        if a is None:
            a = addresses[name] = self.book.load(p, name) or Address(name)
        if msg.offset <= a.applied:
            work.outcomes[(op.op, "redelivered")] += 1
            return
        t = work.tally
        if isinstance(op, SignalOp):
            deliveries = a.signal(op, msg.offset, now, self.rules, t)
        elif op.op == "await":
            deliveries = a.await_(op, msg.offset, now, self.rules, t)
        else:
            deliveries = a.cancel(op, now, self.rules, t)
        a.applied = msg.offset
        work.outcomes[(op.op, "applied")] += 1
        self._deliver(deliveries, now, work)

    def _deliver(self, deliveries: list[Delivery], now: int, work: _Work) -> None:
        for d in deliveries:
            work.out.append(command_message(d.command(now), self.routing))
            work.delivered["run" if d.signal.run_id is not None else "correlation"] += 1

    async def _broadcast(self, msg: Any, op: BroadcastOp, now: int, work: _Work) -> None:
        try:
            commands = await self.broadcaster.commands(op, now)
        except HeadraceError as exc:
            work.out.append(self._dead_letter(msg, exc.code, exc.message))
            return
        work.out.extend(commands)
        work.targets += len(commands)
        work.delivered["broadcast"] += len(commands)
        work.outcomes[("broadcast", "applied")] += 1
        log.info(
            "broadcast delivered",
            extra={"signal_id": op.signal_id, "type": op.type, "targets": len(commands)},
        )

    async def _send(self, messages: list[Outgoing]) -> None:
        while True:
            try:
                await self._producer().send(messages)
                return
            except HeadraceError as exc:
                if not exc.retryable:
                    raise
                # Everything is sent again: a duplicate command beats a lost one.
                log.warning("commands not acknowledged, retrying: %s", exc.message)
                await asyncio.sleep(1.0)

    async def _flush(self) -> None:
        while True:
            try:
                await self.store.flush(self._producer())
                return
            except HeadraceError as exc:
                if not exc.retryable:
                    raise
                log.warning("changelog flush failed, retrying: %s", exc.message)
                await asyncio.sleep(1.0)

    @staticmethod
    def _count(work: _Work) -> None:
        for label, n in work.delivered.items():
            metrics.DELIVERED.labels(label).inc(n)
        for (op, outcome), n in work.outcomes.items():
            metrics.MESSAGES.labels(op, outcome).inc(n)
        _count_tally(work.tally)
        if work.targets or work.broadcasts:
            metrics.BROADCASTS.inc(len(work.broadcasts))
            metrics.BROADCAST_TARGETS.inc(work.targets)

    def _dead_letter(self, msg: Any, code: ErrorCode, reason: str) -> Outgoing:
        metrics.REJECTED.labels(code.code).inc()
        log.warning(
            "signals message dead-lettered",
            extra={"reason": reason, "partition": msg.partition, "offset": msg.offset},
        )
        headers = [
            ("headrace-error-code", code.code.encode()),
            ("headrace-error", f"signals message: {reason}".encode()[:4000]),
            ("headrace-source-topic", self.topics.signals.encode()),
            ("headrace-source-partition", str(msg.partition).encode()),
            ("headrace-source-offset", str(msg.offset).encode()),
            ("headrace-service", b"signals"),
        ]
        return Outgoing(self.topics.dlq, msg.value, msg.key, None, headers)

    def _maybe_crash(self, point: str) -> None:
        if self._crash_point != point or self._crash_probability <= 0:
            return
        import random

        if random.random() < self._crash_probability:
            log.warning("test crash hook: SIGKILL at %s", point)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)

    # -- the sweep -----------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval / 1000)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("expiry sweep failed; trying again next round")

    async def sweep(self, now: int | None = None) -> int:
        """Drop what expired at ``now`` (default: the clock) in the owned partitions."""
        now = int(time.time() * 1000) if now is None else now
        tally = Tally()
        async with self.lock:
            for p in sorted(self.active):
                due = self.book.due(p, now, self.config.sweep_batch)
                if not due:
                    continue
                changed: dict[str, Address] = {}
                stale: list[bytes] = []
                for key, name in due:
                    a = changed.get(name) or self.book.load(p, name)
                    if a is None or a.indexed != split_expiry_key(key)[0]:
                        stale.append(key)  # filed under an old expiry
                    if a is not None:
                        a.expire(now, self.rules, tally)
                        changed[name] = a
                self.book.save(p, changed.values(), stale)
            await self._flush()
        metrics.SWEEPS.inc()
        _count_tally(tally)
        return tally.expired

    # -- running ---------------------------------------------------------------------

    def run(self) -> None:
        from headrace.streams.runner import run_worker

        self.start_clients()
        try:
            run_worker(self.app, self.settings, "signals")
        finally:
            if self.producer is not None:
                self.producer.close()


def _count_tally(t: Tally) -> None:
    metrics.BUFFERED.inc(t.buffered)
    metrics.TAKEN.inc(t.taken)
    metrics.RETURNED.inc(t.returned)
    metrics.EXPIRED.inc(t.expired)
    metrics.DUPLICATES.inc(t.duplicates)
