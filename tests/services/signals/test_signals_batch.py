"""The signal service's batch, in process: what it does with what it cannot apply.

The service runs here without faust's worker: batches are handed to
``SignalService.process`` directly, as the agent would, while its producer,
RocksDB and topics are real (the test broker). Kafka's refusals are real too:
topics and a producer with a small ``max.message.bytes``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)
from faust.types import TP
from support import wait_for

from headrace.core.codec import decode_command
from headrace.core.envelope import Command
from headrace.errors import ErrorCode
from headrace.services.signals.address import Address
from headrace.services.signals.book import AddressBook
from headrace.services.signals.config import SignalSettings
from headrace.services.signals.service import SignalService
from headrace.settings import Settings
from headrace.streams.partition_reader import Record, read_partition
from headrace.streams.producer import AsyncProducer
from headrace.topic_admin import ensure_topics

pytestmark = pytest.mark.integration

SMALL = 20_000  # max.message.bytes where a test wants Kafka to refuse


def noise(n: int) -> str:
    """``n`` bytes of data that do not compress (the producer compresses batches)."""
    return base64.b64encode(os.urandom(n)).decode()


BIG = noise(30_000)


@dataclass
class Msg:
    value: bytes | None
    key: bytes
    partition: int
    offset: int
    timestamp: float = field(default_factory=time.time)
    headers: list[tuple[str, bytes]] | None = None


@dataclass
class Ev:
    message: Msg


class Batch:
    """Messages as they would come off ``signals``: each at its address's partition, in order."""

    def __init__(self, svc: SignalService) -> None:
        self.svc = svc
        self.next: dict[int, int] = {}
        self.events: list[Ev] = []

    def add(self, doc: dict[str, Any] | bytes, address: str = "acme/k") -> Batch:
        p = partition(self.svc, address)
        off = self.next.get(p, 100)
        self.next[p] = off + 1
        value = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.events.append(Ev(Msg(value, address.encode(), p, off)))
        return self

    def signal(self, signal_id: str, data: Any = None, key: str = "k") -> Batch:
        doc = {
            "op": "signal",
            "signal_id": signal_id,
            "signal": "go",
            "tenant": "acme",
            "correlation": key,
            "data": data,
            "time": int(time.time() * 1000),
        }
        return self.add(doc, f"acme/{key}")

    def await_(self, wait_id: str, run_id: str, key: str = "k") -> Batch:
        doc = {
            "op": "await",
            "wait_id": wait_id,
            "tenant": "acme",
            "run_id": run_id,
            "signal": "go",
            "correlation": key,
            "index": "correlation",
            "time": int(time.time() * 1000),
        }
        return self.add(doc, f"acme/{key}")

    def broadcast(self, signal_id: str) -> Batch:
        doc = {
            "op": "broadcast",
            "signal_id": signal_id,
            "signal": "go",
            "type": "plain",
            "data": None,
            "time": int(time.time() * 1000),
        }
        return self.add(doc, "acme/bc")


def partition(svc: SignalService, address: str) -> int:
    from headrace.core.outbox import signal_partition

    return signal_partition(address, svc.settings.partitions)


def set_max_bytes(settings: Settings, topic: str, limit: int) -> None:
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    entry = ConfigEntry(
        "max.message.bytes", str(limit), incremental_operation=AlterConfigOpType.SET
    )
    res = ConfigResource("topic", topic, incremental_configs=[entry])
    for fut in admin.incremental_alter_configs([res]).values():
        fut.result(30)

    def applied() -> bool:
        (fut,) = admin.describe_configs([ConfigResource("topic", topic)]).values()
        return bool(fut.result(30)["max.message.bytes"].value == str(limit))

    wait_for(applied, 15, f"max.message.bytes={limit} on {topic}")  # the broker takes a moment


@pytest.fixture
def svc(settings: Settings, tmp_path: Path) -> Iterator[SignalService]:
    settings = settings.model_copy(update={"data_dir": tmp_path})
    ensure_topics(settings)
    config = SignalSettings(api_url="http://127.0.0.1:9", broadcast_give_up=1500)
    service = SignalService(settings, instance="t", config=config)
    # faust creates the changelog topic when its worker starts; there is none here
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    topic = NewTopic(
        service.store.changelog_topic,
        settings.partitions,
        1,
        config={"cleanup.policy": "compact"},
    )
    for fut in admin.create_topics([topic]).values():
        fut.result(30)
    service.start_clients()
    yield service
    assert service.producer is not None
    service.producer.close(5)


def run(svc: SignalService, batch: Batch, timeout: float = 15.0) -> None:
    async def go() -> None:
        await asyncio.wait_for(svc.process(batch.events), timeout)
        await svc.broadcaster.close()

    asyncio.run(go())


def read_all(settings: Settings, topic: str) -> list[Record]:
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    out: list[Record] = []
    for p in sorted(partitions):
        out.extend(read_partition(settings.bootstrap, topic, p, 0, timeout=10))
    return out


def dead_letters(svc: SignalService) -> list[Record]:
    return read_all(svc.settings, svc.topics.dlq)


def commands(svc: SignalService) -> list[Command]:
    return [
        decode_command(r.value)
        for r in read_all(svc.settings, svc.topics.commands)
        if r.value is not None
    ]


def record(svc: SignalService, address: str = "acme/k") -> Address | None:
    return AddressBook(svc.store).load(partition(svc, address), address)


def reason(rec: Record) -> str:
    return dict(rec.headers)["headrace-error"].decode()


def code(rec: Record) -> str:
    return dict(rec.headers)["headrace-error-code"].decode()


# -- poison messages ---------------------------------------------------------------------


def test_a_message_the_parser_chokes_on_is_dead_lettered_and_the_rest_applied(
    svc: SignalService,
) -> None:
    b = Batch(svc).signal("s1", 1)
    infinite = b'{"op": "signal", "signal_id": "s2", "signal": "go", "tenant": "acme",'
    infinite += b' "correlation": "k", "data": 2, "time": Infinity}'
    b.add(infinite)
    b.add(b"[" * 100_000 + b"]" * 100_000)
    b.signal("s3", 3)
    run(svc, b)
    dead = dead_letters(svc)
    assert sorted(reason(d) for d in dead) == [
        "signals message: `time` must be a finite number (epoch ms), got inf",
        "signals message: not JSON this service reads: nested too deeply",
    ]
    assert {code(d) for d in dead} == {ErrorCode.DECODE_FAILED.code}
    a = record(svc)
    assert a is not None
    assert [s.id for s in a.buffer.values()] == ["s1", "s3"]


def test_a_message_that_fails_while_folded_changes_nothing(
    svc: SignalService, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Address.await_

    def await_(self: Address, op: Any, *a: Any) -> Any:
        out = real(self, op, *a)  # registers the wait and takes the offer...
        if op.wait_id == "bad":
            raise KeyError("a bug")  # ...then fails
        return out

    monkeypatch.setattr(Address, "await_", await_)
    run(svc, Batch(svc).signal("s1", 1).await_("bad", "r-bad").await_("good", "r-good"))
    (dead,) = dead_letters(svc)
    assert code(dead) == ErrorCode.INTERNAL.code
    assert "KeyError" in reason(dead)
    assert json.loads(dead.value or b"")["wait_id"] == "bad"
    # without the failed message: the signal went to the next wait, and only it is recorded
    (cmd,) = commands(svc)
    assert cmd.command_id == "s1/good"
    a = record(svc)
    assert a is not None and list(a.waits) == ["good"]


# -- what Kafka refuses for good -----------------------------------------------------------


def test_a_command_the_broker_refuses_dead_letters_the_signal_that_caused_it(
    svc: SignalService,
) -> None:
    set_max_bytes(svc.settings, svc.topics.commands, SMALL)
    b = Batch(svc).await_("w1", "r1").await_("w2", "r2").signal("huge", BIG)
    run(svc, b.signal("small", "ok"))
    (dead,) = dead_letters(svc)  # once, with its value, though both its commands were refused
    assert code(dead) == ErrorCode.KAFKA_PRODUCE_FAILED.code
    assert "Kafka refuses what it causes" in reason(dead) and "too large" in reason(dead)
    assert json.loads(dead.value or b"")["signal_id"] == "huge"
    # the batch was decided again without it: the next signal reached the waits
    # (sent more than once while the culprit was sought: the orchestrator applies it once)
    assert {c.command_id for c in commands(svc)} == {"small/w1", "small/w2"}
    a = record(svc)
    assert a is not None and [s.id for s in a.buffer.values()] == ["small"]
    assert {w.holding for w in a.waits.values()} == set(a.buffer)


def test_a_message_too_large_for_the_producer_is_dead_lettered_without_its_value(
    svc: SignalService,
) -> None:
    # librdkafka refuses it before it leaves: the error once looked retryable, and the
    # batch was retried once a second forever
    assert svc.producer is not None
    svc.producer.close(5)
    svc.producer = AsyncProducer(svc.settings, "test-small", message_max_bytes=SMALL)
    run(svc, Batch(svc).await_("w1", "r1").signal("huge", BIG).signal("small", "ok"))
    (dead,) = dead_letters(svc)
    assert dead.value is None
    assert dict(dead.headers)["headrace-value-omitted"] == b"too large"
    assert dict(dead.headers)["headrace-source-offset"] == b"101"
    assert "the message is left out" in reason(dead)
    # (sent more than once while the culprit was sought: the orchestrator applies it once)
    assert {c.command_id for c in commands(svc)} == {"small/w1"}


def test_a_record_the_changelog_refuses_dead_letters_the_message_that_grew_it(
    svc: SignalService,
) -> None:
    set_max_bytes(svc.settings, svc.store.changelog_topic, SMALL)
    # one fits the record, two do not
    b = Batch(svc).signal("first", noise(12_000)).signal("second", noise(12_000))
    run(svc, b.signal("third", "z"))
    (dead,) = dead_letters(svc)
    assert json.loads(dead.value or b"")["signal_id"] == "second"
    assert "would not fit the changelog" in reason(dead)
    a = record(svc)
    assert a is not None and [s.id for s in a.buffer.values()] == ["first", "third"]
    # what is on disk is what the changelog has: a worker elsewhere restores the same
    (last,) = [r for r in read_all(svc.settings, svc.store.changelog_topic) if r.key == b"aacme/k"][
        -1:
    ]
    assert last.value == a.to_bytes()


# -- broadcasts and the lock ------------------------------------------------------------------


def test_a_broadcast_waiting_for_the_api_holds_neither_the_lock_nor_a_revoked_partition(
    svc: SignalService,
) -> None:
    p = partition(svc, "acme/k")
    seen: dict[str, Any] = {}

    async def go() -> None:
        batch = Batch(svc).signal("s1", 1).broadcast("bc")
        task = asyncio.create_task(svc.process(batch.events))
        await asyncio.sleep(0.5)  # the API at :9 refuses; the broadcast retries for 1.5 s
        seen["locked"] = svc.lock.locked()
        # a rebalance takes the partition of the signal meanwhile: no 30 s wait for the lock
        started = time.monotonic()
        await svc._on_partitions_revoked(None, revoked=[TP(svc.topics.signals, p)])
        seen["revoke_took"] = time.monotonic() - started
        await asyncio.wait_for(task, 15)
        await svc.broadcaster.close()

    asyncio.run(go())
    assert seen["locked"] is False
    assert seen["revoke_took"] < 1
    # the batch wrote nothing for the partition it lost: its next owner decides `s1`
    assert record(svc) is None
    (dead,) = dead_letters(svc)  # the broadcast, after the API's give-up
    assert code(dead) == ErrorCode.API_UNAVAILABLE.code


def test_the_worker_closes_the_broadcasters_client_when_it_stops(
    svc: SignalService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    import headrace.streams.runner as runner

    closed: list[bool] = []

    def run_worker(app: Any, settings: Any, service: str) -> None:
        async def lifetime() -> None:
            svc.broadcaster._client = httpx.AsyncClient()
            await app.on_before_shutdown.send()
            closed.append(svc.broadcaster._client is None)

        asyncio.run(lifetime())

    monkeypatch.setattr(runner, "run_worker", run_worker)
    svc.run()
    assert closed == [True]
    svc.start_clients()  # for the fixture's teardown
