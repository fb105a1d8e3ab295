"""The orchestrator: a faust worker over ``commands`` that keeps run state in RocksDB.

For each batch of commands (``take_events``; per-run order is kept because a
run's commands share a partition and the agent has concurrency 1):

1. load each run's snapshot from the ``runs`` table (RocksDB, compacted changelog);
2. decide the command and seal the new events onto the run's hash chain
   (:func:`headrace.core.engine.handle`);
3. write the events to ``events`` and the effects — task requests, timers,
   signal waits, child commands — to their topics (idempotent producer,
   ``acks=all``), and wait for all of them;
4. write the snapshots, and the ``events`` offset they cover (the watermark),
   in one RocksDB batch per partition plus their changelog records;
5. let faust acknowledge the commands (their offsets are committed later).

A crash anywhere loses nothing: a command not yet acknowledged is delivered
again, and deciding it again yields nothing once its events are in the run's
state. When a worker takes a partition it first *replays* ``events`` from the
watermark to the end, folding every event the snapshots lack and re-emitting
its effects (the services downstream dedupe on effect ids), then processes
commands. This is DESIGN.md's "the log is the truth".

A command that cannot be decoded, names an unknown workflow, or makes the
decider raise goes to ``dlq`` with the reason in headers; the run's state is
reloaded and no other run is affected. So does a ``StartRun`` of a drained
workflow type or tenant (:mod:`headrace.drain`); a refused ``call`` child is
reported to its parent as failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from headrace.core.codec import decode_command, decode_event
from headrace.core.decider import State, effects
from headrace.core.decider.state import SnapshotUnreadable
from headrace.core.dsl.model import Definition
from headrace.core.engine import Gap, fold, handle
from headrace.core.envelope import Command, CommandType, Event
from headrace.core.outbox import Outgoing, batch_timer_ops, command_message, messages_for
from headrace.definitions import DefinitionCatalog
from headrace.drain import DrainBook, refused_start_notice
from headrace.errors import ErrorCode, HeadraceError
from headrace.settings import Settings
from headrace.streams import orchestrator_metrics as metrics
from headrace.streams.app import bytes_table, make_app, raw_topic
from headrace.streams.batched_store import BatchedChangelogStore
from headrace.streams.batches import fail_stop, run_batches
from headrace.streams.crash_hook import CrashHook
from headrace.streams.partition_reader import read_partition
from headrace.streams.partition_store import PartitionStore
from headrace.streams.producer import AsyncProducer, MessageRefused

log = logging.getLogger("headrace.orchestrator")

# Each partition database also holds the offset of the `events` partition up to
# which its snapshots are complete: replay starts there.
WATERMARK_KEY = b"\x00headrace/events-offset"


def get_watermark(store: PartitionStore, partition: int) -> int:
    raw = store.get(partition, WATERMARK_KEY)
    return 0 if raw is None else int.from_bytes(raw, "big")


def watermark_item(offset: int) -> tuple[bytes, bytes]:
    return WATERMARK_KEY, offset.to_bytes(8, "big")


# Test hook (DESIGN.md's crash tests): HEADRACE_CRASH_POINT=after-events makes the
# worker SIGKILL itself, with probability HEADRACE_CRASH_PROBABILITY, after a
# batch's events are acknowledged and before its snapshots are written.
CRASH_POINTS = ("after-events", "after-snapshots")


@dataclass(slots=True)
class _Batch:
    """What one batch of commands produced, per partition."""

    events: list[Outgoing] = field(default_factory=list)
    event_partitions: list[int] = field(default_factory=list)
    effects: list[Outgoing] = field(default_factory=list)
    states: dict[int, dict[bytes, State]] = field(default_factory=lambda: defaultdict(dict))


def _key_text(key: Any) -> str:
    return key.decode(errors="replace") if isinstance(key, bytes | bytearray) else str(key)


# The largest message the orchestrator writes: librdkafka's default
# message.max.bytes (1,000,000) less room for the key, headers and framing.
MAX_MESSAGE = 990_000

# A refused message this large is the cause; the broker may refuse small messages
# that only shared its record batch.
_LARGE = 512 * 1024


def _refused_runs(exc: MessageRefused, sent: list[Outgoing]) -> set[str]:
    """The run keys to blame for a refusal: those of the large refused messages,
    or of every refused message when none is large."""
    refused = [sent[i] for i in exc.refused if i < len(sent)]
    large = [m for m in refused if len(m.value or b"") >= _LARGE]
    return {_key_text(m.key) for m in (large or refused)}


class Orchestrator:
    """One orchestrator worker. ``run()`` blocks until SIGTERM."""

    def __init__(
        self,
        settings: Settings,
        *,
        instance: str = "0",
        web_port: int | None = None,
        batch_size: int = 500,
        batch_within: float = 0.002,
    ) -> None:
        self.settings = settings
        self.routing = settings.routing
        self.topics = settings.topics
        self.batch_size = batch_size
        self.batch_within = batch_within
        self.app = make_app(settings, "orchestrator", instance=instance, web_port=web_port)
        self.commands = raw_topic(self.app, settings, self.topics.commands)
        self.table = bytes_table(self.app, settings, "runs")
        self.store = BatchedChangelogStore(self.table)
        self.catalog = DefinitionCatalog(settings)
        self.drains = DrainBook(settings)
        self.producer: AsyncProducer | None = None
        self._maybe_crash = CrashHook()
        self._ready: set[int] = set()
        self.app.agent(self.commands, concurrency=1, name="orchestrate")(self._agent)
        # faust's Signal.connect is typed for a keyword-only `signal` argument.
        self.app.on_rebalance_complete.connect(self._on_rebalance_complete)  # type: ignore[arg-type]
        self.app.on_partitions_revoked.connect(self._on_partitions_revoked)  # type: ignore[arg-type]

    # -- life cycle ----------------------------------------------------------

    def start_clients(self) -> None:
        """Start the producer and read the definitions (idempotent)."""
        if self.producer is None:
            self.producer = AsyncProducer(self.settings, "headrace-orchestrator")
            self.catalog.start(wait=60.0)
            self.drains.start(wait=60.0)

    async def _on_partitions_revoked(self, sender: Any, revoked: Any = None, **_: Any) -> None:
        for tp in revoked or ():
            if tp.topic == self.topics.commands:
                self._ready.discard(tp.partition)

    # -- replay ----------------------------------------------------------------

    async def _on_rebalance_complete(self, sender: Any = None, **_: Any) -> None:
        """Fold ``events`` beyond the snapshots of every partition we now own.

        faust awaits this signal after table recovery and before it resumes
        the streams, so no command of a partition is processed before its replay.
        """
        assigned = sorted(
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == self.topics.commands
        )
        for p in assigned:
            if p in self._ready:
                continue
            started = time.monotonic()
            folded = await self._replay(p)
            self._ready.add(p)
            metrics.REPLAYED.inc(folded)
            seconds = time.monotonic() - started
            log.info(
                f"replayed events partition {p}: folded {folded} events in {seconds:.2f}s",
                extra={"partition": p, "folded": folded, "seconds": seconds},
            )

    async def _replay(self, partition: int) -> int:
        assert self.producer is not None
        start = get_watermark(self.store, partition)
        loop = asyncio.get_running_loop()
        records = await loop.run_in_executor(
            None,
            lambda: list(
                read_partition(self.settings.bootstrap, self.topics.events, partition, start)
            ),
        )
        if not records:
            return 0
        states: dict[bytes, State] = {}
        broken: set[bytes] = set()
        outgoing: list[Outgoing] = []
        folded = 0
        for rec in records:
            if rec.value is None:
                continue
            try:
                event = decode_event(rec.value)
            except HeadraceError as exc:
                log.error(
                    "undecodable record in events log skipped during replay",
                    extra={"partition": partition, "offset": rec.offset, "error": str(exc)},
                )
                continue
            key = event.run_key.encode()
            state = states.get(key)
            if state is None:
                if key in broken:
                    continue
                try:
                    state = states[key] = self._load(partition, key)
                except HeadraceError as exc:
                    broken.add(key)
                    log.error(str(exc), extra={"partition": partition, "offset": rec.offset})
                    continue
            try:
                if not fold(state, event):
                    continue
            except Gap as exc:
                log.error(str(exc), extra={"partition": partition, "offset": rec.offset})
                continue
            folded += 1
            outgoing.extend(messages_for(effects(event), self.routing))
        await self.producer.send(outgoing)
        puts = {k: s.to_bytes() for k, s in states.items()}
        puts.update([watermark_item(records[-1].offset + 1)])
        self.store.write(partition, puts)
        await self.store.flush(self.producer)
        return folded

    # -- processing --------------------------------------------------------------

    def _load(self, partition: int, key: bytes) -> State:
        raw = self.store.get(partition, key)
        if raw is None:
            return State.empty()
        try:
            return State.from_bytes(raw)
        except ValueError as exc:
            # A snapshot this code cannot read (written by another version): the
            # log is the truth, so fold the run's events from the beginning.
            log.warning(
                "snapshot of %s unreadable (%s); rebuilding it from the events log",
                key.decode(errors="replace"),
                exc,
            )
            return self._rebuild(partition, key)

    def _rebuild(self, partition: int, key: bytes) -> State:
        """The run's state from its events alone (reads the whole partition: a rare path)."""
        state = State.empty()
        for rec in read_partition(self.settings.bootstrap, self.topics.events, partition, 0):
            if rec.key != key or rec.value is None:
                continue
            try:
                fold(state, decode_event(rec.value))
            except (Gap, HeadraceError) as exc:
                # Deciding on a partial history would fork the chain: refuse the
                # run's commands (they are dead-lettered with this reason).
                raise HeadraceError(
                    ErrorCode.CHAIN_BROKEN,
                    f"run {key.decode(errors='replace')} cannot be rebuilt from the events "
                    f"log at offset {rec.offset}: {exc}",
                ) from exc
        metrics.REBUILT.inc()
        return state

    async def _agent(self, stream: Any) -> None:
        await run_batches(
            stream, self.process, size=self.batch_size, within=self.batch_within, what="commands"
        )

    async def process(self, batch: Iterable[Any]) -> None:
        """Decide a batch of faust events (commands) and write everything they cause."""
        assert self.producer is not None
        started = time.perf_counter()
        msgs = [ev.message for ev in batch]
        n = len(msgs)
        if n == 0:
            return
        refused: dict[int, HeadraceError] = {}  # commands whose output Kafka refused
        while True:
            out = _Batch()
            for i, msg in enumerate(msgs):
                if i in refused:
                    self._dead_letter(msg, refused[i], out)
                else:
                    self._decide_one(msg, out)
            # Events and effects go out together and are awaited together: one round
            # trip per batch. An effect may thus reach its service before its event is
            # durable; if the event write then fails, the command is decided again from
            # the same snapshot and yields the same events and effect ids (decide is
            # deterministic), which the services dedupe.
            effects = batch_timer_ops(out.effects, self.routing)
            sent = [*out.events, *effects]
            try:
                offsets = await self.producer.send(sent)
                break
            except MessageRefused as exc:
                culprits = _refused_runs(exc, sent)
                more = {
                    i: HeadraceError(
                        ErrorCode.KAFKA_PRODUCE_FAILED,
                        f"what the command caused cannot be written to Kafka: {exc.message}",
                    )
                    for i, msg in enumerate(msgs)
                    if i not in refused and _key_text(msg.key) in culprits
                }
                if not more:
                    raise  # nothing to blame: fail-stop, as for any failed batch
                # Decide the batch again without them (their states were not saved;
                # what Kafka took of the others is written again, byte-identical).
                refused.update(more)
        if out.events:
            self._maybe_crash("after-events")
        high: dict[int, int] = {}
        for p, off in zip(out.event_partitions, offsets[: len(out.events)], strict=True):
            if off + 1 > high.get(p, 0):
                high[p] = off + 1
        for p, states in out.states.items():
            puts = {k: s.to_bytes() for k, s in states.items()}
            if p in high:
                puts.update([watermark_item(high[p])])
            self.store.write(p, puts)
        # The snapshots' changelog records go out in the background: the commands
        # may be acknowledged before Kafka has them, since a changelog that lags
        # only means a longer replay of `events` on the next owner (the watermark
        # record follows its snapshots in the same partition).
        self._flush_changelog()
        self._maybe_crash("after-snapshots")
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(n)
        metrics.EVENTS.inc(len(out.events))

    def _decide_one(self, msg: Any, out: _Batch) -> None:
        partition: int = msg.partition
        try:
            command = decode_command(msg.value)
        except HeadraceError as exc:
            self._dead_letter(msg, exc, out)
            return
        key = command.run_key.encode()
        states = out.states[partition]
        state = states.get(key)
        held = state is not None  # an earlier command of this batch changed it
        try:
            if state is None:
                state = self._load(partition, key)
            try:
                definition = self._definition_for(state, command)
                if definition is None:
                    # StartRun for an existing run, or a command for a run that never
                    # started: nothing to do (a redelivery, or a stray).
                    metrics.COMMANDS.labels("ignored").inc()
                    return
                sealed = handle(state, command, definition)
            except SnapshotUnreadable as exc:
                # A flow packed in the snapshot is decoded only when first used:
                # the state may be half-updated, so rebuild it and decide again.
                log.warning("run %s: %s; rebuilding it", command.run_key, exc)
                state = self._rebuild(partition, key)
                definition = self._definition_for(state, command)
                if definition is None:
                    metrics.COMMANDS.labels("ignored").inc()
                    return
                sealed = handle(state, command, definition)
        except HeadraceError as exc:
            self._forget(partition, key, out, held)
            self._dead_letter(msg, exc, out)
            notice = refused_start_notice(command, exc.message)
            if exc.code is ErrorCode.DRAINING and notice is not None:
                out.effects.append(command_message(notice, self.routing))
            return
        except Exception as exc:
            log.exception("decider failed", extra={"run": command.run_key})
            self._forget(partition, key, out, held)
            self._dead_letter(
                msg,
                HeadraceError(
                    ErrorCode.INTERNAL,
                    f"the decider raised {type(exc).__name__}: {exc} — "
                    + traceback.format_exc(limit=3).replace("\n", " | "),
                ),
                out,
            )
            return  # `state` may be half-updated: it is not kept
        topic = self.topics.events
        events = [Outgoing(topic, raw, key, partition, _event_headers(e)) for e, raw in sealed]
        caused = [m for e, _ in sealed for m in messages_for(effects(e), self.routing)]
        large = next((m for m in (*events, *caused) if len(m.value or b"") > MAX_MESSAGE), None)
        if large is not None:
            # Kafka would refuse it: write nothing of this command, so the run's log
            # stays whole, and say why (the run waits where it was).
            self._forget(partition, key, out, held)
            self._dead_letter(
                msg,
                HeadraceError(
                    ErrorCode.KAFKA_PRODUCE_FAILED,
                    f"what the command caused cannot be written to Kafka: a message to "
                    f"{large.topic} of {len(large.value or b''):,} bytes is over the "
                    f"{MAX_MESSAGE:,}-byte limit — keep large data out of run data "
                    "(store it elsewhere and pass a reference)",
                    retryable=False,
                ),
                out,
            )
            return
        states[key] = state
        metrics.COMMANDS.labels("applied" if sealed else "no-op").inc()
        if not sealed:
            return
        out.events.extend(events)
        out.event_partitions.extend([partition] * len(events))
        out.effects.extend(caused)

    def _forget(self, partition: int, key: bytes, out: _Batch, held: bool) -> None:
        """Drop what a failed command may have half-done to the run's state: the next
        command of the batch starts again from the snapshot plus the batch's events."""
        states = out.states[partition]
        if not held:
            states.pop(key, None)
            return
        state = self._load(partition, key)
        for m in out.events:
            if m.key == key and m.value is not None:
                fold(state, decode_event(m.value))
        states[key] = state

    def _definition_for(self, state: State, command: Command) -> Definition | None:
        if state.started:
            deployed = self.catalog.get(state.wtype, state.wversion)
            if deployed is None:
                raise HeadraceError(
                    ErrorCode.DEFINITION_NOT_FOUND,
                    f"run {command.run_key} uses {state.wtype}@{state.wversion}, which is not "
                    "in the definitions topic — was the topic truncated?",
                )
            return deployed.definition
        if command.type is not CommandType.StartRun:
            return None
        wtype = command.payload.get("workflow")
        version = command.payload.get("version")
        if not isinstance(wtype, str):
            raise HeadraceError(
                ErrorCode.COMMAND_REJECTED,
                f"StartRun for {command.run_key} names no workflow (payload.workflow)",
            )
        self.drains.check(command.tenant, wtype)
        deployed = self.catalog.get(wtype, version)
        if deployed is None:
            raise HeadraceError(
                ErrorCode.DEFINITION_NOT_FOUND,
                f"StartRun for {command.run_key}: workflow {wtype}"
                + (f"@{version}" if version else "")
                + " is not deployed — `headrace deploy FILE` first",
            )
        return deployed.definition

    def _dead_letter(self, msg: Any, exc: HeadraceError, out: _Batch) -> None:
        metrics.COMMANDS.labels("dead-lettered").inc()
        log.warning(
            "command dead-lettered",
            extra={
                "code": exc.code.code,
                "reason": exc.message,
                "partition": msg.partition,
                "offset": msg.offset,
            },
        )
        headers = [
            ("headrace-error-code", exc.code.code.encode()),
            ("headrace-error", exc.message.encode()[:4000]),
            ("headrace-source-topic", self.topics.commands.encode()),
            ("headrace-source-partition", str(msg.partition).encode()),
            ("headrace-source-offset", str(msg.offset).encode()),
            ("headrace-service", b"orchestrator"),
        ]
        out.effects.append(Outgoing(self.topics.dlq, msg.value, msg.key, None, headers))

    def _flush_changelog(self) -> None:
        assert self.producer is not None
        task = asyncio.ensure_future(self.store.flush(self.producer))
        task.add_done_callback(_changelog_flushed)

    # -- running -----------------------------------------------------------------

    def run(self) -> None:
        from headrace.streams.runner import run_worker

        self.start_clients()
        try:
            run_worker(self.app, self.settings, "orchestrator")
        finally:
            if self.producer is not None:
                self.producer.close()
            self.catalog.stop()
            self.drains.stop()


def _changelog_flushed(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        fail_stop("writing the runs changelog", task.exception())


def _event_headers(event: Event) -> list[tuple[str, bytes]]:
    headers = [("headrace-event-type", event.type.value.encode())]
    if event.traceparent:
        headers.append(("traceparent", event.traceparent.encode()))
    return headers
