"""confluent-kafka clients built from :class:`~headrace.settings.Settings` with headrace's defaults.

Every service makes its producers, consumers and admin clients here, so the
delivery guarantees DESIGN.md relies on are set in one place:

* producers are idempotent with ``acks=all`` (the orchestrator writes a
  command's events before it updates its snapshot; a write it believes
  acknowledged must be on every in-sync replica);
* consumers never auto-commit (a service commits after its effects are
  durable) and start from the earliest offset when a group is new;
* librdkafka's log lines go through Python logging (JSON logs), not raw stderr.

``produce_sync`` and ``flush`` turn delivery failures into
``HeadraceError(KAFKA_PRODUCE_FAILED)`` instead of callbacks nobody checks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from headrace.errors import ErrorCode, HeadraceError
from headrace.settings import Settings

client_log = logging.getLogger("headrace.kafka.client")

Headers = list[tuple[str, bytes | str | None]] | dict[str, bytes | str | None]


def _base(settings: Settings, client_id: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.bootstrap,
        "client.id": client_id,
        "logger": client_log,
    }


def producer_config(
    settings: Settings,
    client_id: str = "headrace",
    transactional_id: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The producer configuration :func:`make_producer` uses (for inspection or tweaking)."""
    conf = {
        **_base(settings, client_id),
        "enable.idempotence": True,
        "acks": "all",
        # A few ms of batching costs little latency and multiplies throughput
        # under load; lz4 is the cheapest codec on CPU.
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    if transactional_id is not None:
        conf["transactional.id"] = transactional_id
    conf.update(overrides)
    return conf


def consumer_config(
    settings: Settings, group_id: str, client_id: str = "headrace", **overrides: Any
) -> dict[str, Any]:
    """The consumer configuration :func:`make_consumer` uses."""
    conf = {
        **_base(settings, client_id),
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    conf.update(overrides)
    return conf


def make_producer(
    settings: Settings,
    client_id: str = "headrace",
    transactional_id: str | None = None,
    **overrides: Any,
) -> Producer:
    """An idempotent ``acks=all`` producer; keyword overrides use librdkafka names with ``_``."""
    return Producer(producer_config(settings, client_id, transactional_id, **_dotted(overrides)))


def make_consumer(
    settings: Settings, group_id: str, client_id: str = "headrace", **overrides: Any
) -> Consumer:
    """A consumer in ``group_id`` that commits only when told and starts at the earliest offset."""
    return Consumer(consumer_config(settings, group_id, client_id, **_dotted(overrides)))


def make_admin(
    settings: Settings, client_id: str = "headrace-admin", **overrides: Any
) -> AdminClient:
    """An AdminClient for the configured cluster."""
    return AdminClient({**_base(settings, client_id), **_dotted(overrides)})


def _dotted(overrides: dict[str, Any]) -> dict[str, Any]:
    """``linger_ms=0`` → ``{"linger.ms": 0}``, so overrides read as Python keywords."""
    return {k.replace("_", "."): v for k, v in overrides.items()}


@dataclass
class DeliveryReport:
    """Delivery callback that remembers failures, so :func:`flush` can raise on them."""

    delivered: int = 0
    failures: list[tuple[KafkaError, str]] = field(default_factory=list)

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failures.append((err, f"{msg.topic()}[{msg.partition()}] key={msg.key()!r}"))


def _failed(err: KafkaError, what: str) -> HeadraceError:
    return HeadraceError(
        ErrorCode.KAFKA_PRODUCE_FAILED,
        f"Kafka did not accept the message to {what}: {err.str()} ({err.name()})"
        + (" — retry it" if err.retriable() else " — fix the cause; retrying will not help"),
        retryable=err.retriable(),
    )


def flush(producer: Producer, timeout: float = 30.0, report: DeliveryReport | None = None) -> None:
    """Wait for every queued message; raise if any failed (per ``report``) or is still unacked."""
    remaining = producer.flush(timeout)
    if report is not None and report.failures:
        err, what = report.failures[0]
        more = len(report.failures) - 1
        exc = _failed(err, what)
        if more:
            exc.message += f" (and {more} more failed deliveries)"
        raise exc
    if remaining:
        raise HeadraceError(
            ErrorCode.KAFKA_TIMEOUT,
            f"{remaining} message(s) still unacknowledged after {timeout}s — the cluster may be "
            "down or overloaded; they may yet be delivered, so resend only idempotently",
        )


def produce_sync(
    producer: Producer,
    topic: str,
    value: bytes | str | None,
    *,
    key: bytes | str | None = None,
    partition: int | None = None,
    headers: Headers | None = None,
    timeout: float = 30.0,
) -> Message:
    """Produce one message and wait for its acknowledgement; returns the delivered message."""
    outcome: list[tuple[KafkaError | None, Message]] = []
    kwargs: dict[str, Any] = {
        "value": value,
        "key": key,
        "headers": headers,
        "on_delivery": lambda err, msg: outcome.append((err, msg)),
    }
    if partition is not None:
        kwargs["partition"] = partition
    where = f"{topic}" + (f"[{partition}]" if partition is not None else "")
    deadline = time.monotonic() + timeout
    while True:
        try:
            producer.produce(topic, **kwargs)
            break
        except BufferError:
            # The local queue is full; serve callbacks to drain it, then retry.
            if time.monotonic() > deadline:
                raise HeadraceError(
                    ErrorCode.KAFKA_TIMEOUT,
                    f"the producer queue stayed full for {timeout}s while producing to {where}",
                ) from None
            producer.poll(0.05)
        except KafkaException as exc:
            raise _failed(exc.args[0], where) from exc
    while not outcome:
        left = deadline - time.monotonic()
        if left <= 0:
            raise HeadraceError(
                ErrorCode.KAFKA_TIMEOUT,
                f"no acknowledgement for the message to {where} within {timeout}s — it may "
                "still be delivered; resend only idempotently",
            )
        producer.poll(min(left, 0.1))
    err, msg = outcome[0]
    if err is not None:
        raise _failed(err, where)
    return msg
