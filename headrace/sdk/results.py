"""Send a worker's reports to ``task-results``, and learn when Kafka has them.

Every report goes to the topic, key and partition its dispatch carried (so it
reaches the task-service instance that owns the task). One idempotent
``acks=all`` producer serves the whole worker; a pump thread serves its
delivery callbacks, so a finished task's offset is released (and may be
committed) only once its ``completed``/``failed`` report is on every in-sync
replica. A report Kafka refused after all of librdkafka's own retries is sent
again while the worker runs — its offset stays uncommitted meanwhile, so even
a crash then loses nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message

from headrace.core.task_codec import TaskDispatch, TaskResult, encode_result
from headrace.kafka import make_producer
from headrace.settings import Settings

log = logging.getLogger("headrace.sdk.results")

Acked = Callable[[], None]


class ResultSender:
    """The worker's producer: reports (and dead letters) out, acknowledgements back."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        # Reports are on the task round-trip's critical path: batch for 1 ms at most.
        self.producer = make_producer(settings, client_id, linger_ms=1)
        self._closing = threading.Event()
        self._pump = threading.Thread(target=self._serve, name="headrace-results", daemon=True)
        self._pump.start()

    def report(
        self, dispatch: TaskDispatch, result: TaskResult, acked: Acked | None = None
    ) -> None:
        """Produce ``result`` where ``dispatch`` says; call ``acked`` once Kafka has it."""
        self.send(
            dispatch.result_topic,
            encode_result(result),
            dispatch.result_key,
            dispatch.result_partition,
            acked=acked,
            what=f"{result.kind.value} of task {result.task_id}",
        )

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None,
        partition: int | None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
        acked: Acked | None = None,
        what: str = "message",
    ) -> None:
        """Produce one message (thread-safe); re-sent if Kafka refuses it, ``acked`` on success."""

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                if acked is not None:
                    acked()
                return
            if self._closing.is_set():
                log.error("giving up on %s to %s while stopping: %s", what, topic, err.str())
                return
            log.warning("Kafka refused %s to %s (%s); sending it again", what, topic, err.str())
            self._produce(topic, value, key, partition, headers, delivered)

        self._produce(topic, value, key, partition, headers, delivered)

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None,
        partition: int | None,
        headers: list[tuple[str, bytes]] | None,
        callback: Callable[[KafkaError | None, Message], None],
    ) -> None:
        kwargs: dict[str, Any] = {"value": value, "key": key, "on_delivery": callback}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                self.producer.produce(topic, **kwargs)
                return
            except BufferError:
                # The local queue is full: let deliveries drain it.
                self.producer.poll(0.05)

    def _serve(self) -> None:
        while not self._closing.is_set():
            self.producer.poll(0.1)

    def flush(self, timeout: float) -> int:
        """Wait for outstanding reports; returns how many are still not acknowledged."""
        return self.producer.flush(timeout)

    def close(self, timeout: float = 10.0) -> None:
        left = self.flush(timeout)
        if left:
            log.error("%d report(s) not acknowledged at shutdown; their tasks redeliver", left)
        self._closing.set()
        self._pump.join(5)
