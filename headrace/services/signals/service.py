"""The signal service: a faust worker over ``signals`` with the correlation index in RocksDB.

For each batch of ``signals`` messages (``take_events``, concurrency 1):

1. every message is validated (:mod:`.messages`); broadcasts are resolved
   through the query API (:mod:`.broadcast`) — before the lock below, since the
   API may take minutes to answer;
2. under the lock the sweep also takes, the messages are folded into the
   records of their addresses (:mod:`.address`), loaded once per batch —
   awaits register waits, signals are offered or buffered, cancels take or
   hand back offers;
3. the resulting ``DeliverSignal`` commands (and dead letters) are produced and
   awaited (idempotent producer, ``acks=all``);
4. then the touched address records' changelog records, and once those are
   acknowledged the records are written to RocksDB — one write per partition,
   none for a partition revoked meanwhile (its next owner decides the messages
   again) — so faust commits the batch's offsets only past state that is in
   Kafka.

A message that cannot be applied goes to ``dlq`` with the reason in headers:
unreadable, failing in the fold (a bug), a broadcast the API cannot serve, or
one that causes a message or a record Kafka refuses for good (too large). The
batch is then decided again without it, from the same records — nothing is
written before step 4 — so it changes nothing. A message too large for the DLQ
itself is dead-lettered without its value (header ``headrace-value-omitted``).

A crash anywhere loses nothing: before step 4 the messages are delivered again
and decided again from the same records (times are record timestamps), giving
the same commands with the same ids, which the orchestrator applies once; after
the changelog records are acknowledged, the records come back from the
changelog and each one's ``applied`` offset makes the messages no-ops.

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
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from headrace.core.outbox import Outgoing, command_message, signal_partition
from headrace.errors import ErrorCode, HeadraceError
from headrace.services.signals import metrics
from headrace.services.signals.address import Address, Rules, Tally
from headrace.services.signals.book import AddressBook, address_of, split_expiry_key
from headrace.services.signals.broadcast import Broadcaster
from headrace.services.signals.config import SignalSettings
from headrace.services.signals.messages import BroadcastOp, Op, SignalOp, WaitOp, parse_op
from headrace.settings import Settings
from headrace.streams.app import bytes_table, make_app, raw_topic
from headrace.streams.batched_store import BatchedChangelogStore
from headrace.streams.crash_hook import CrashHook
from headrace.streams.producer import AsyncProducer, MessageRefused

log = logging.getLogger("headrace.signals")

TABLE = "addresses"
# Test hook (the crash tests): HEADRACE_CRASH_POINT=signals-after-commands makes the
# worker SIGKILL itself, with probability HEADRACE_CRASH_PROBABILITY, once a batch's
# commands are acknowledged and before its records are written; signals-after-changelog
# once their changelog records are acknowledged and before they are written to RocksDB.
CRASH_POINTS = ("signals-after-commands", "signals-after-changelog")


@dataclass(frozen=True, slots=True)
class _Reject:
    """Why a message of the batch goes to the DLQ instead of being applied."""

    code: ErrorCode
    reason: str
    keep_value: bool = True  # False: the message itself is too large for the DLQ


@dataclass(slots=True)
class _Work:
    """What one batch produces, before anything is written."""

    addresses: dict[int, dict[str, Address]] = field(default_factory=dict)
    # the messages of the batch (their indexes) that loaded each (partition, address)
    touched: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    # (index of the message it comes from, the message to produce)
    out: list[tuple[int, Outgoing]] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    delivered: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    tally: Tally = field(default_factory=Tally)
    broadcasts: int = 0
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
        self.source = raw_topic(self.app, settings, self.topics.signals)
        self.table = bytes_table(self.app, settings, TABLE)
        self.store = BatchedChangelogStore(self.table)
        self.book = AddressBook(self.store)
        self.broadcaster = Broadcaster(self.config, self.routing)
        self.producer: AsyncProducer | None = None
        self.active: set[int] = set()
        self._maybe_crash = CrashHook()
        # The agent and the sweep both rewrite address records: one at a time.
        self.lock = asyncio.Lock()
        # Revocations so far, and the last one of each partition: a batch or sweep begun
        # before a partition's revocation does not write its records.
        self._epoch = 0
        self._revoked: dict[int, int] = {}
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
        self._epoch += 1
        for p in gone:
            self._revoked[p] = self._epoch
        # A batch or sweep in hand finishes first (it writes no records of these partitions
        # from now on). After 30 s we go on regardless; faust would otherwise kick us out
        # of the group.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30), self.lock:
                pass
        self.active -= gone
        metrics.ACTIVE_PARTITIONS.set(len(self.active))

    # -- the batch -------------------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        async for batch in stream.take_events(self.config.batch, within=self.config.batch_within):
            await self.process(batch)

    async def process(self, events: Iterable[Any]) -> None:
        """Fold a batch of ``signals`` messages and write everything it causes.

        A message that cannot be applied — unreadable, failing in the fold, or
        causing a message or a record Kafka refuses for good (too large) — goes to
        the DLQ with the reason, and the batch is decided again without it, so
        nothing it changed is written.
        """
        started = time.perf_counter()
        epoch = self._epoch
        msgs = [ev.message for ev in events]
        rejected: dict[int, _Reject] = {}
        ops: list[Op | None] = []
        for i, msg in enumerate(msgs):
            try:
                ops.append(parse_op(msg.value))
            except Exception as exc:  # ValueError, or a parser bug: never the agent's end
                ops.append(None)
                reason = str(exc) if isinstance(exc, ValueError) else _describe(exc)
                self._reject(rejected, i, msg, _Reject(ErrorCode.DECODE_FAILED, reason))
        # The query API may take minutes to answer: broadcasts are resolved before the
        # lock, so the sweep and a rebalance do not wait for them.
        resolved: dict[int, list[Outgoing]] = {}
        for i, op in enumerate(ops):
            if isinstance(op, BroadcastOp):
                resolved_or_reject = await self._resolve(msgs[i], op)
                if isinstance(resolved_or_reject, _Reject):
                    self._reject(rejected, i, msgs[i], resolved_or_reject)
                else:
                    resolved[i] = resolved_or_reject
        async with self.lock:
            dirty: set[tuple[int, str]] = set()
            while True:
                work = self._decide(msgs, ops, resolved, rejected, dirty, epoch)
                if await self._commit(work, msgs, rejected, dirty, epoch):
                    break
        self._count(work)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)

    def _lost(self, partition: int, epoch: int) -> bool:
        """Was ``partition`` revoked since the batch of ``epoch`` began?"""
        return self._revoked.get(partition, -1) > epoch

    def _reject(self, rejected: dict[int, _Reject], i: int, msg: Any, r: _Reject) -> None:
        rejected[i] = r
        log.warning(
            "signals message dead-lettered",
            extra={
                "code": r.code.code,
                "reason": r.reason,
                "partition": msg.partition,
                "offset": msg.offset,
            },
        )

    async def _resolve(self, msg: Any, op: BroadcastOp) -> list[Outgoing] | _Reject:
        try:
            commands = await self.broadcaster.commands(op, _now(msg))
        except HeadraceError as exc:
            return _Reject(exc.code, exc.message)
        except Exception as exc:
            log.exception("broadcast %s failed", op.signal_id)
            return _Reject(ErrorCode.INTERNAL, f"broadcast {op.signal_id}: {_describe(exc)}")
        log.info(
            "broadcast resolved",
            extra={"signal_id": op.signal_id, "type": op.type, "targets": len(commands)},
        )
        return commands

    def _decide(
        self,
        msgs: list[Any],
        ops: list[Op | None],
        resolved: dict[int, list[Outgoing]],
        rejected: dict[int, _Reject],
        dirty: set[tuple[int, str]],
        epoch: int,
    ) -> _Work:
        """Fold the batch from the stored records; a message that fails is rejected and the
        batch folded again from the start (nothing is written yet), so it changes nothing."""
        while True:
            work = _Work()
            for i, msg in enumerate(msgs):
                if self._lost(msg.partition, epoch):
                    continue  # the partition's next owner decides it
                r = rejected.get(i)
                op = ops[i]
                if r is not None:
                    work.out.append((i, self._dead_letter(msg, r)))
                    work.rejected[r.code.code] += 1
                elif isinstance(op, BroadcastOp):
                    self._broadcast(i, op, resolved[i], work)
                elif op is not None:
                    try:
                        self._fold(i, msg, op, work)
                    except Exception as exc:
                        log.exception("folding a signals message failed")
                        self._reject(rejected, i, msg, _Reject(ErrorCode.INTERNAL, _describe(exc)))
                        break
            else:
                for p, name in dirty:
                    addresses = work.addresses.setdefault(p, {})
                    if name not in addresses and not self._lost(p, epoch):
                        addresses[name] = self.book.load(p, name) or Address(name)
                return work

    def _fold(self, i: int, msg: Any, op: WaitOp | SignalOp, work: _Work) -> None:
        now = _now(msg)
        p: int = msg.partition
        name = op.address
        home = signal_partition(name, self.settings.partitions)
        if home != p:
            out = Outgoing(self.topics.signals, msg.value, name, home, list(msg.headers or ()))
            work.out.append((i, out))
            work.outcomes[(op.op, "forwarded")] += 1
            return
        addresses = work.addresses.setdefault(p, {})
        a = addresses.get(name)
        if a is None:
            a = addresses[name] = self.book.load(p, name) or Address(name)
        work.touched.setdefault((p, name), []).append(i)
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
        for d in deliveries:
            work.out.append((i, command_message(d.command(now), self.routing)))
            work.delivered["run" if d.signal.run_id is not None else "correlation"] += 1

    def _broadcast(self, i: int, op: BroadcastOp, commands: list[Outgoing], work: _Work) -> None:
        work.out.extend((i, c) for c in commands)
        work.broadcasts += 1
        work.targets += len(commands)
        work.delivered["broadcast"] += len(commands)
        work.outcomes[("broadcast", "applied")] += 1

    async def _commit(
        self,
        work: _Work,
        msgs: list[Any],
        rejected: dict[int, _Reject],
        dirty: set[tuple[int, str]],
        epoch: int,
    ) -> bool:
        """Produce the batch's messages, then its records' changelog, then write the records
        to RocksDB. False: Kafka refused something for good — decide again without the
        messages that caused it (now in ``rejected``)."""
        _, refused = await self._produce([m for _, m in work.out])
        if refused:
            # One decision per message, however many of its outputs were refused.
            causes = {work.out[j][0]: why for j, why in sorted(refused.items(), reverse=True)}
            for i, why in causes.items():
                self._refuse(rejected, i, msgs[i], why)
            return False
        self._maybe_crash("signals-after-commands")
        staged = []
        for p, addresses in work.addresses.items():
            if self._lost(p, epoch):
                # Revoked while the batch was in hand: its records are the next owner's to
                # write (it decides these messages again, into the same commands).
                log.warning("partition %d revoked during the batch; not writing its records", p)
                continue
            puts, deletes = self.book.changes(addresses.values())
            staged.append((p, puts, deletes, self.store.changelog_records(p, puts, deletes)))
        records = [r for *_, rs in staged for r in rs]
        offsets, refused = await self._produce(records)
        if refused:
            by_address: dict[tuple[int, str], str] = {}
            for j, why in refused.items():
                by_address.setdefault(_address(records[j]), why)
            for (p, name), why in by_address.items():
                culprits = [i for i in work.touched.get((p, name), ()) if i not in rejected]
                if not culprits:
                    raise HeadraceError(
                        ErrorCode.INTERNAL,
                        f"the changelog refuses the record of address {name!r}, which no "
                        f"message of this batch changed: {why}",
                    )
                # The record holds every message of the batch at the address: drop the
                # largest (what grows a record is the data of the signals it keeps), and
                # try again without it.
                i = max(culprits, key=lambda i: (_size(msgs[i]), i))
                reason = (
                    f"the record of address {name!r} would not fit the changelog with this "
                    f"message applied: {why}"
                )
                self._reject(rejected, i, msgs[i], _Reject(ErrorCode.KAFKA_PRODUCE_FAILED, reason))
            # Some of the records did reach the changelog: write all of them again.
            dirty.update(_address(r) for r in records)
            return False
        self._maybe_crash("signals-after-changelog")
        at = 0
        for p, puts, deletes, rs in staged:
            self.store.write_acked(p, puts, deletes, rs, offsets[at : at + len(rs)])
            at += len(rs)
        return True

    def _refuse(self, rejected: dict[int, _Reject], i: int, msg: Any, why: str) -> None:
        """Kafka refused for good a message that message ``i`` causes: dead-letter ``i`` (if
        ``i`` was dead-lettered already, that is what was refused: again without its value)."""
        r = rejected.get(i)
        if r is None:
            reason = f"Kafka refuses what it causes: {why}"
            self._reject(rejected, i, msg, _Reject(ErrorCode.KAFKA_PRODUCE_FAILED, reason))
        elif r.keep_value:
            # Its dead letter was refused: the message itself is too large for the DLQ.
            reason = f"{r.reason} (the message is left out, the DLQ refuses it: {why})"
            self._reject(rejected, i, msg, _Reject(r.code, reason, keep_value=False))
        else:
            raise HeadraceError(
                ErrorCode.KAFKA_PRODUCE_FAILED,
                f"the DLQ refuses even the headers of signals message "
                f"{msg.partition}:{msg.offset}: {why}",
            )

    async def _produce(self, messages: list[Outgoing]) -> tuple[list[int], dict[int, str]]:
        """Produce ``messages``, retrying what may succeed later (a duplicate beats a loss: all
        are idempotent). Returns their offsets, and why Kafka refuses some for good (too
        large, invalid) by index — every other message is then acknowledged."""
        if not messages:
            return [], {}
        while True:
            try:
                return await self._producer().send(messages), {}
            except MessageRefused as exc:
                offsets, suspects = list(exc.offsets), sorted(exc.refused)
                break
            except HeadraceError as exc:
                if not exc.retryable:
                    raise
                log.warning("produce not acknowledged, retrying: %s", exc.message)
                await asyncio.sleep(1.0)
        # A broker refuses a whole record batch for one message too large: each suspect
        # alone says whether it is the one (all in flight at once, in order).
        refused: dict[int, str] = {}
        while suspects:
            results = await asyncio.gather(
                *(self._producer().send([messages[j]]) for j in suspects), return_exceptions=True
            )
            again = []
            for j, res in zip(suspects, results, strict=True):
                if isinstance(res, MessageRefused):
                    refused[j] = res.refused[0]
                elif isinstance(res, HeadraceError) and res.retryable:
                    again.append(j)
                elif isinstance(res, BaseException):
                    raise res
                else:
                    offsets[j] = res[0]
            if again:
                log.warning("produce not acknowledged, retrying %d messages", len(again))
                await asyncio.sleep(1.0)
            suspects = again
        return offsets, refused

    @staticmethod
    def _count(work: _Work) -> None:
        for label, n in work.delivered.items():
            metrics.DELIVERED.labels(label).inc(n)
        for (op, outcome), n in work.outcomes.items():
            metrics.MESSAGES.labels(op, outcome).inc(n)
        for code, n in work.rejected.items():
            metrics.REJECTED.labels(code).inc(n)
        _count_tally(work.tally)
        if work.broadcasts:
            metrics.BROADCASTS.inc(work.broadcasts)
            metrics.BROADCAST_TARGETS.inc(work.targets)

    def _dead_letter(self, msg: Any, r: _Reject) -> Outgoing:
        headers = [
            ("headrace-error-code", r.code.code.encode()),
            ("headrace-error", f"signals message: {r.reason}".encode()[:4000]),
            ("headrace-source-topic", self.topics.signals.encode()),
            ("headrace-source-partition", str(msg.partition).encode()),
            ("headrace-source-offset", str(msg.offset).encode()),
            ("headrace-service", b"signals"),
        ]
        if not r.keep_value:
            headers.append(("headrace-value-omitted", b"too large"))
        return Outgoing(
            self.topics.dlq, msg.value if r.keep_value else None, msg.key, None, headers
        )

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
            epoch = self._epoch
            for p in sorted(self.active):
                due = self.book.due(p, now, self.config.sweep_batch)
                if not due or self._lost(p, epoch):
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
                puts, deletes = self.book.changes(changed.values(), stale)
                records = self.store.changelog_records(p, puts, deletes)
                offsets, refused = await self._produce(records)
                if self._lost(p, epoch):
                    continue
                if refused:
                    # Smaller than a record the changelog took before: only if its limits
                    # shrank. The address stays as it is, and is tried again next round.
                    bad = {_address(records[j])[1] for j in refused}
                    log.error(
                        "the changelog refuses expired address records; keeping them",
                        extra={"partition": p, "addresses": sorted(bad)[:10]},
                    )
                    keep = [j for j, r in enumerate(records) if _address(r)[1] not in bad]
                    records, offsets = [records[j] for j in keep], [offsets[j] for j in keep]
                    puts = {k: v for k, v in puts.items() if address_of(k) not in bad}
                    deletes = [k for k in deletes if address_of(k) not in bad]
                self.store.write_acked(p, puts, deletes, records, offsets)
        metrics.SWEEPS.inc()
        _count_tally(tally)
        return tally.expired

    # -- running ---------------------------------------------------------------------

    async def _close_broadcaster(self, sender: Any = None, **_: Any) -> None:
        await self.broadcaster.close()

    def run(self) -> None:
        from headrace.streams.runner import run_worker

        self.start_clients()
        # Once the agents stopped, on the worker's loop (its HTTP connections live there).
        self.app.on_before_shutdown.connect(self._close_broadcaster)  # type: ignore[arg-type]
        try:
            run_worker(self.app, self.settings, "signals")
        finally:
            if self.producer is not None:
                self.producer.close()


def _now(msg: Any) -> int:
    """A message's time: its record timestamp (ms), so deciding it again decides the same."""
    return int((msg.timestamp or time.time()) * 1000)


def _address(record: Outgoing) -> tuple[int, str]:
    """The partition and address of a changelog record of the table."""
    assert record.partition is not None and isinstance(record.key, bytes)
    return record.partition, address_of(record.key)


def _size(msg: Any) -> int:
    return len(msg.value or b"")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _count_tally(t: Tally) -> None:
    metrics.BUFFERED.inc(t.buffered)
    metrics.TAKEN.inc(t.taken)
    metrics.RETURNED.inc(t.returned)
    metrics.EXPIRED.inc(t.expired)
    metrics.DUPLICATES.inc(t.duplicates)
