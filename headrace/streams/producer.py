"""librdkafka's producer, awaitable from asyncio.

faust's own producer (aiokafka) costs tens of microseconds of event-loop time
per message (bench/kafka_baseline.py, L4 against L2); the orchestrator writes
several messages per workflow step, so it produces through confluent-kafka
instead and awaits *batches*: one future per batch resolves once every message
in it is acknowledged (``acks=all``, idempotent), or fails with the first
delivery error.

A daemon thread serves librdkafka's delivery callbacks and hands the outcome
to the event loop with ``call_soon_threadsafe``, once per batch.

Failures come in two kinds. Most are about Kafka (a broker down, a leader
moving) and raise ``HeadraceError(KAFKA_PRODUCE_FAILED)`` as they always did,
``retryable`` as librdkafka says. Some are about the *message* — larger than
``message.max.bytes`` (the producer's or the topic's), an invalid record or
topic name, a partition the topic does not have — and no retry will ever get
it through: those raise :class:`MessageRefused` (same code, ``retryable``
False, ``permanent`` True) once the rest of the batch is acknowledged, naming
every refused message by its index, so that a service can dead-letter what
caused them instead of retrying the batch forever. A broker refuses a whole
record batch for one oversize message, so a refused message may be innocent:
send it again alone to find out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from headrace.core.outbox import Outgoing
from headrace.errors import ErrorCode, HeadraceError
from headrace.kafka import make_producer
from headrace.settings import Settings

PERMANENT_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,  # larger than message.max.bytes (producer or topic)
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.TOPIC_EXCEPTION,  # an invalid topic name
        KafkaError._UNKNOWN_PARTITION,  # an explicit partition the topic does not have
    }
)
"""Produce errors about the message itself, which no retry fixes."""


def is_permanent(err: KafkaError) -> bool:
    """Does ``err`` refuse the message for good (see :data:`PERMANENT_ERRORS`)?"""
    return err.code() in PERMANENT_ERRORS


class MessageRefused(HeadraceError):
    """Kafka refused messages of a batch for good; the others were acknowledged.

    ``refused`` maps the index of each refused message in the batch to Kafka's
    reason, ``offsets`` gives the acknowledged ones' offsets (-1 for the
    refused). The code is ``KAFKA_PRODUCE_FAILED`` as for any failed produce;
    ``retryable`` is False and ``permanent`` True: sending the batch again
    fails the same way.
    """

    permanent = True

    def __init__(self, refused: dict[int, str], offsets: list[int]) -> None:
        first = min(refused)
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        super().__init__(
            ErrorCode.KAFKA_PRODUCE_FAILED,
            f"Kafka refused message {first} of the batch for good: {refused[first]}{more} — "
            "retrying will not help; dead-letter it or make it smaller",
            retryable=False,
        )
        self.refused = refused
        self.offsets = offsets


class _Batch:
    __slots__ = ("error", "future", "lock", "loop", "offsets", "refused", "remaining")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[list[int]] = loop.create_future()
        self.remaining = count
        self.error: HeadraceError | None = None
        self.refused: dict[int, str] = {}
        self.offsets: list[int] = [-1] * count
        # Delivery callbacks run on the poll thread; refusals at produce() time on the loop's.
        self.lock = threading.Lock()

    def done(self, index: int, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.fail(index, err, f"{msg.topic()}[{msg.partition()}]")
            return
        with self.lock:
            self.offsets[index] = msg.offset() or 0
            self._count()

    def fail(self, index: int, err: KafkaError, where: str) -> None:
        with self.lock:
            if is_permanent(err):
                self.refused[index] = f"{where}: {err.str()} ({err.name()})"
            elif self.error is None:
                self.error = HeadraceError(
                    ErrorCode.KAFKA_PRODUCE_FAILED,
                    f"Kafka did not acknowledge a message to {where}: {err.str()}",
                    retryable=err.retriable(),
                )
            self._count()

    def _count(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if self.future.done():
            return
        if self.error is not None:
            # Anything else wrong means sending again: the refused fail again then.
            self.future.set_exception(self.error)
        elif self.refused:
            self.future.set_exception(MessageRefused(dict(self.refused), self.offsets))
        else:
            self.future.set_result(self.offsets)


class AsyncProducer:
    """An idempotent ``acks=all`` confluent-kafka producer with awaitable batches."""

    def __init__(self, settings: Settings, client_id: str, **overrides: Any) -> None:
        overrides.setdefault("linger_ms", 2)
        self._producer = make_producer(settings, client_id, **overrides)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"{client_id}-poll", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def send_batch(self, messages: Iterable[Outgoing]) -> asyncio.Future[list[int]]:
        """Produce ``messages`` in order; the future gives their offsets once all are acked.

        It fails with :class:`MessageRefused` if Kafka refused some of them for good
        (and acknowledged the rest), with ``HeadraceError(KAFKA_PRODUCE_FAILED)`` on
        any other failure."""
        items = list(messages)
        loop = asyncio.get_running_loop()
        batch = _Batch(loop, len(items))
        if not items:
            batch.future.set_result([])
            return batch.future
        produce = self._producer.produce
        for i, m in enumerate(items):
            cb = _callback(batch, i)
            kwargs: dict[str, Any] = {"key": m.key, "headers": m.headers, "on_delivery": cb}
            if m.partition is not None:
                kwargs["partition"] = m.partition
            while True:
                try:
                    produce(m.topic, m.value, **kwargs)
                    break
                except BufferError:
                    # librdkafka's queue is full: let the poll thread drain it.
                    self._producer.poll(0.01)
                except KafkaException as exc:
                    err = exc.args[0]
                    if isinstance(err, KafkaError) and is_permanent(err):
                        # Refused before it was queued (e.g. over message.max.bytes):
                        # the rest of the batch still goes; the future raises MessageRefused.
                        batch.fail(i, err, m.topic)
                        break
                    raise HeadraceError(
                        ErrorCode.KAFKA_PRODUCE_FAILED,
                        f"cannot produce to {m.topic}: {err}",
                    ) from exc
        return batch.future

    async def send(self, messages: Iterable[Outgoing]) -> list[int]:
        return await self.send_batch(messages)

    def flush(self, timeout: float = 30.0) -> int:
        """Block until queued messages are delivered; returns how many are left."""
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)
        self._stop.set()
        self._thread.join(5)


def _callback(batch: _Batch, index: int) -> Any:
    return lambda err, msg: batch.done(index, err, msg)
