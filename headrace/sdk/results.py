"""Send a worker's reports to ``task-results``, and learn when Kafka has them.

Every report goes to the topic, key and partition its dispatch carried (so it
reaches the task-service instance that owns the task). One idempotent
``acks=all`` producer serves the whole worker; a pump thread serves its
delivery callbacks, so a finished task's offset is released (and may be
committed) only once its ``completed``/``failed`` report is on every in-sync
replica. A report Kafka refused after all of librdkafka's own retries for a
passing reason (a broker down, a leader moving) is sent again while the worker
runs — its offset stays uncommitted meanwhile, so even a crash then loses
nothing. A report Kafka refuses for good (too large, not authorized) is not
sent again: the sender's ``refused`` callback hears of it, so the caller can
send something smaller or release the dispatch instead of stalling its
partition.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from headrace.core.task_codec import TaskDispatch, TaskResult, encode_result
from headrace.kafka import make_producer
from headrace.settings import Settings

log = logging.getLogger("headrace.sdk.results")

Acked = Callable[[], None]
Refused = Callable[[KafkaError], None]

# librdkafka's default message.max.bytes, set explicitly so a report's limit is known:
# it is checked (uncompressed) when a message is produced, and is below the broker's
# default limit (1 MiB), so an over-large report fails fast and locally.
MAX_MESSAGE_BYTES = 1_000_000
# A broker refuses a whole record batch that is over the topic's max.message.bytes,
# small reports in it too. librdkafka never adds a message to a batch it would take
# past batch.size, so a report larger than this travels alone and is refused alone;
# the small ones batch up to this much (any topic limit above it is safe for them).
BATCH_BYTES = 64 * 1024
_RESEND_AFTER_S = 0.5

_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
# Errors no re-send can cure: the message itself, or our right to write the topic.
_PERMANENT = _TOO_LARGE | {
    KafkaError.INVALID_RECORD,
    KafkaError.INVALID_REQUIRED_ACKS,
    KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError._INVALID_ARG,
    KafkaError._UNKNOWN_PARTITION,
}


def too_large(err: KafkaError) -> bool:
    """Kafka refused the message for its size."""
    return err.code() in _TOO_LARGE


def permanent(err: KafkaError) -> bool:
    """Sending the same message again cannot succeed."""
    return err.fatal() or err.code() in _PERMANENT


class ResultSender:
    """The worker's producer: reports (and dead letters) out, acknowledgements back."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        # Reports are on the task round-trip's critical path: batch for 1 ms at most.
        self.producer = make_producer(
            settings,
            client_id,
            linger_ms=1,
            message_max_bytes=MAX_MESSAGE_BYTES,
            batch_size=BATCH_BYTES,
        )
        self.max_message_bytes = MAX_MESSAGE_BYTES
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
        refused: Refused | None = None,
        what: str = "message",
    ) -> None:
        """Produce one message (thread-safe); ``acked`` once Kafka has it.

        A passing error sends it again. A permanent one (:func:`permanent`) calls
        ``refused`` (on whichever thread learnt it: this one, or the pump's) or,
        without one, is logged; the message is then dropped.
        """

        def delivered(err: KafkaError | None, msg: Message | None) -> None:
            if err is None:
                if acked is not None:
                    acked()
                return
            if permanent(err):
                if refused is not None:
                    refused(err)
                else:
                    log.error("Kafka refused %s to %s for good: %s", what, topic, err.str())
                return
            if self._closing.is_set():
                log.error("giving up on %s to %s while stopping: %s", what, topic, err.str())
                return
            log.warning("Kafka refused %s to %s (%s); sending it again", what, topic, err.str())
            if msg is None:
                # Refused before it was queued, so no delivery attempt took any time:
                # wait a little rather than spin (or recurse) on the same refusal.
                again = threading.Timer(_RESEND_AFTER_S, resend)
                again.daemon = True
                again.start()
            else:
                resend()

        def resend() -> None:
            self._produce(topic, value, key, partition, headers, delivered)

        self._produce(topic, value, key, partition, headers, delivered)

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None,
        partition: int | None,
        headers: list[tuple[str, bytes]] | None,
        callback: Callable[[KafkaError | None, Message | None], None],
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
            except KafkaException as exc:
                # Refused before it was queued (too large, unknown partition): the same
                # verdict as a failed delivery, reported the same way.
                callback(exc.args[0], None)
                return

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
