"""The ingress router: CloudEvents on ``ingress`` become commands, signals or DLQ records.

A plain confluent-kafka consumer loop, not a faust agent: the router keeps no
table and no per-key state, and faust's iteration alone costs ~80 µs per
message here, more than routing does. The loop takes what the consumer has
prefetched as one batch, routes every record (:mod:`headrace.streams.routes`),
produces the result with an idempotent ``acks=all`` producer, waits for every
acknowledgement and only then commits the batch's offsets — at-least-once.
Routing is deterministic, so a batch processed twice (after a crash, a
rebalance or a failed produce) produces the same commands again, and the
orchestrator ignores the repeats.

Bad input never stops the loop: it is dead-lettered. A produce that Kafka
refuses for good (a record too large for a topic, say) turns that record into a
DLQ record; when Kafka is unavailable the batch is retried from its first
offset with backoff until it gets through or the router is stopped.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Histogram, start_http_server

from headrace.core.outbox import Outgoing
from headrace.definitions import DefinitionCatalog
from headrace.drain import DrainBook
from headrace.errors import ErrorCode
from headrace.kafka import make_consumer, make_producer
from headrace.logs import configure
from headrace.settings import Settings
from headrace.streams.producer import is_permanent
from headrace.streams.routes import Definitions, Drains, IngressRecord, Routes

log = logging.getLogger("headrace.router")

RECORDS = Counter(
    "headrace_router_records_total", "ingress records routed, by outcome", ["outcome"]
)
BATCH_SECONDS = Histogram(
    "headrace_router_batch_seconds",
    "time to route, produce and acknowledge one batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RETRIES = Counter("headrace_router_batch_retries_total", "batches retried after a produce failure")

MAX_BACKOFF_S = 5.0


class Router:
    """One router worker: a member of the ``<prefix>router`` consumer group."""

    def __init__(
        self,
        settings: Settings,
        catalog: Definitions,
        *,
        group: str | None = None,
        client_id: str = "headrace-router",
        batch_size: int = 1000,
        catch_up_timeout: float = 5.0,
        ack_timeout: float = 30.0,
        drains: Drains | None = None,
    ) -> None:
        self.settings = settings
        self.group = group or f"{settings.topic_prefix}router"
        self.client_id = client_id
        self.batch_size = batch_size
        self.ack_timeout = ack_timeout
        self.routes = Routes(settings, catalog, catch_up_timeout=catch_up_timeout, drains=drains)
        self._stop = threading.Event()
        self._producer: Producer | None = None
        self._committed: dict[tuple[str, int], int] = {}

    def stop(self) -> None:
        """Ask the loop to finish its batch, commit and leave the group."""
        self._stop.set()

    def run(self, on_assigned: Callable[[], None] | None = None) -> None:
        """Route until :meth:`stop`; ``on_assigned`` runs after the first partition assignment."""
        consumer = make_consumer(
            self.settings,
            self.group,
            self.client_id,
            # The loop waits for acks between fetches; keep the prefetch modest.
            queued_max_messages_kbytes=16384,
        )

        def assigned(c: Any, partitions: list[TopicPartition]) -> None:
            log.info("router assigned %s", [p.partition for p in partitions])
            if on_assigned is not None:
                on_assigned()

        def revoked(c: Any, partitions: list[TopicPartition]) -> None:
            # Their next owner commits from now on; a late commit of ours could only
            # move its offsets back.
            for p in partitions:
                self._committed.pop((p.topic, p.partition), None)

        consumer.subscribe(
            [self.settings.topics.ingress], on_assign=assigned, on_revoke=revoked, on_lost=revoked
        )
        self._producer = self._new_producer()
        backoff = 0.1
        try:
            while not self._stop.is_set():
                first = consumer.poll(0.2)
                if first is None:
                    continue
                batch = [first, *consumer.consume(self.batch_size - 1, 0)]
                if self._process(consumer, batch):
                    backoff = 0.1
                else:
                    RETRIES.inc()
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
        finally:
            self._commit_final(consumer)
            consumer.close()
            if self._producer is not None:
                self._producer.flush(self.ack_timeout)

    # -- one batch -------------------------------------------------------------

    def _process(self, consumer: Any, batch: list[Message]) -> bool:
        """Route, produce, await acks, commit; False (and rewound) if it must be retried."""
        started = time.perf_counter()
        self.routes.begin_batch()
        out: list[tuple[IngressRecord, Outgoing]] = []
        first: dict[tuple[str, int], int] = {}
        after: dict[tuple[str, int], int] = {}
        tally: Tally[str] = Tally()
        for m in batch:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("ingress consumer: %s", err)
                continue
            rec = IngressRecord(
                m.topic() or "",
                m.partition() or 0,
                m.offset() or 0,
                m.key(),
                m.value(),
                list(m.headers() or ()),  # type: ignore[arg-type]
                m.timestamp()[1],
            )
            routed = self.routes.route(rec)
            tally[routed.outcome] += 1
            out.extend((rec, o) for o in routed.messages)
            tp = (rec.topic, rec.partition)
            first.setdefault(tp, rec.offset)
            after[tp] = rec.offset + 1
        if not after:
            return True
        if not self._deliver(out):
            self._rewind(consumer, first)
            return False
        offsets = [TopicPartition(t, p, o) for (t, p), o in after.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=True)
            self._committed.update(after)
        except KafkaException as exc:
            # Uncommitted offsets only mean this batch may be routed again later.
            log.warning("commit failed (the batch may be routed again): %s", exc)
        for outcome, n in tally.items():
            RECORDS.labels(outcome).inc(n)
        BATCH_SECONDS.observe(time.perf_counter() - started)
        return True

    def _deliver(self, out: list[tuple[IngressRecord, Outgoing]]) -> bool:
        """Produce ``out`` and wait for every ack; a record Kafka refuses goes to the DLQ."""
        failures = self._produce_all([o for _, o in out])
        if failures is None:
            return False
        refused: list[tuple[int, KafkaError]] = []
        for i, _ in failures:
            # A broker refuses a whole record batch for one oversize message, and
            # librdkafka does not split it: try each refused message alone.
            alone = self._produce_all([out[i][1]])
            if alone is None:
                return False
            refused.extend((i, err) for _, err in alone)
        if not refused:
            return True
        fallbacks = []
        for i, err in refused:
            rec, o = out[i]
            note = f"Kafka refused the routed message to {o.topic}: {err.str()}"
            if o.topic == self.settings.topics.dlq:
                # The record itself cannot be parked (too large, say): park its headers.
                parked = self.routes.dead_letter(rec, ErrorCode.KAFKA_PRODUCE_FAILED, note)
                fallbacks.append(Outgoing(parked.topic, None, parked.key, None, parked.headers))
            else:
                fallbacks.append(self.routes.dead_letter(rec, ErrorCode.KAFKA_PRODUCE_FAILED, note))
        again = self._produce_all(fallbacks)
        return again == []

    def _produce_all(self, messages: list[Outgoing]) -> list[tuple[int, KafkaError]] | None:
        """Permanent failures by index; None if anything is worth retrying as a batch."""
        producer = self._producer
        assert producer is not None
        failures: list[tuple[int, KafkaError]] = []
        retry = False

        def report(i: int) -> Callable[[KafkaError | None, Message], None]:
            def done(err: KafkaError | None, msg: Message) -> None:
                if err is not None:
                    failures.append((i, err))

            return done

        for i, m in enumerate(messages):
            kwargs: dict[str, Any] = {"key": m.key, "headers": m.headers, "on_delivery": report(i)}
            if m.partition is not None:
                kwargs["partition"] = m.partition
            while True:
                try:
                    producer.produce(m.topic, m.value, **kwargs)
                    break
                except BufferError:
                    producer.poll(0.05)
                except KafkaException as exc:
                    failures.append((i, exc.args[0]))
                    break
        if producer.flush(self.ack_timeout) > 0:
            log.warning("produce not acknowledged within %.0f s; retrying", self.ack_timeout)
            retry = True
        for _, err in failures:
            if err.fatal():
                log.error("producer failed fatally (%s); starting a new one", err)
                self._producer = self._new_producer()
                return None
            if not is_permanent(err):
                retry = True
        if retry:
            log.warning("produce failed, batch will be retried: %s", failures[:1])
            return None
        return failures

    def _rewind(self, consumer: Any, first: dict[tuple[str, int], int]) -> None:
        for (topic, partition), offset in first.items():
            try:
                consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                # No longer ours: the next owner starts from the committed offset.
                log.info("not rewinding %s[%d]: %s", topic, partition, exc)

    def _commit_final(self, consumer: Any) -> None:
        if not self._committed:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._committed.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("final commit failed: %s", exc)

    def _new_producer(self) -> Producer:
        return make_producer(self.settings, self.client_id, linger_ms=1)


def run_router(
    settings: Settings,
    *,
    web_port: int | None = None,
    batch_size: int = 1000,
    instance: str = "0",
) -> None:
    """``headrace serve router``: route until SIGTERM/SIGINT, then drain and leave."""
    configure(settings.log_level, settings.log_format, service="router")
    if web_port is not None:
        start_http_server(web_port, addr=settings.web_host)
    catalog = DefinitionCatalog(settings).start(wait=60.0)
    drains = DrainBook(settings).start(wait=60.0)
    router = Router(
        settings,
        catalog,
        client_id=f"headrace-router-{instance}",
        batch_size=batch_size,
        drains=drains,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: router.stop())
    log.info("router started", extra={"group": router.group, "topic": settings.topics.ingress})
    try:
        router.run()
    finally:
        catalog.stop()
        drains.stop()
        log.info("router stopped")
