"""librdkafka's producer, awaitable from asyncio.

faust's own producer (aiokafka) costs tens of microseconds of event-loop time
per message (bench/kafka_baseline.py, L4 against L2); the orchestrator writes
several messages per workflow step, so it produces through confluent-kafka
instead and awaits *batches*: one future per batch resolves once every message
in it is acknowledged (``acks=all``, idempotent), or fails with the first
delivery error.

A daemon thread serves librdkafka's delivery callbacks and hands the outcome
to the event loop with ``call_soon_threadsafe``, once per batch.
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


class _Batch:
    __slots__ = ("error", "future", "loop", "offsets", "remaining")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[list[int]] = loop.create_future()
        self.remaining = count
        self.error: HeadraceError | None = None
        self.offsets: list[int] = [-1] * count

    def done(self, index: int, err: KafkaError | None, msg: Message) -> None:
        if err is not None and self.error is None:
            self.error = HeadraceError(
                ErrorCode.KAFKA_PRODUCE_FAILED,
                f"Kafka did not acknowledge a message to {msg.topic()}[{msg.partition()}]: "
                f"{err.str()}",
                retryable=err.retriable(),
            )
        else:
            self.offsets[index] = msg.offset() or 0
        self.remaining -= 1
        if self.remaining == 0:
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if self.future.done():
            return
        if self.error is not None:
            self.future.set_exception(self.error)
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
        """Produce ``messages`` in order; the future gives their offsets once all are acked."""
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
