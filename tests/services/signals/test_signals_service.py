"""The signal service on its own: the commands it writes for the messages it reads.

No orchestrator: the test writes ``await``/``cancel_wait`` messages as the
outbox does and reads the ``DeliverSignal`` commands off ``commands``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from procs import ServiceProcess
from signals_kit import SignalsProcess, send, until

from headrace.core.codec import decode_command
from headrace.core.decider.effects import AwaitSignal, CancelSignalWait
from headrace.core.envelope import Command
from headrace.core.outbox import messages_for, signal_body, signal_partition
from headrace.kafka import flush, make_producer
from headrace.settings import Settings
from headrace.streams.partition_reader import read_partition

pytestmark = pytest.mark.integration


class Commands:
    """Every command on ``commands``, collected in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.got: list[Command] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        c = Consumer({"bootstrap.servers": self.settings.bootstrap, "group.id": "test-cmds"})
        topic = self.settings.topics.commands
        c.assign([TopicPartition(topic, p, 0) for p in range(self.settings.partitions)])
        try:
            while not self._stop.is_set():
                for m in c.consume(100, 0.1):
                    if m.error() is None and m.value() is not None:
                        self.got.append(decode_command(m.value()))
        finally:
            c.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def commands(platform: Settings) -> Iterator[Commands]:
    c = Commands(platform)
    yield c
    c.stop()


def produce(settings: Settings, messages: list[Any]) -> None:
    producer = make_producer(settings, "test-outbox")
    for m in messages:
        producer.produce(m.topic, m.value, m.key, partition=m.partition, headers=m.headers)
    flush(producer)


def await_(settings: Settings, wait_id: str, run_id: str, key: str) -> None:
    produce(
        settings, messages_for([AwaitSignal(wait_id, "acme", run_id, "go", key)], settings.routing)
    )


def test_expired_signals_are_dropped_and_the_next_wait_gets_the_oldest_that_is_left(
    platform: Settings, services: Callable[..., ServiceProcess], commands: Commands
) -> None:
    svc = services(
        "signals",
        {"HEADRACE_SIGNAL_BUFFER_TTL": "2s", "HEADRACE_SIGNAL_SWEEP_INTERVAL": "200ms"},
    )
    assert isinstance(svc, SignalsProcess)
    svc.wait_ready()
    send(platform, "old", "old", correlation="k")
    until(lambda: svc.metric("headrace_signals_expired_total") == 1, "the sweep to drop it", 30)
    send(platform, "fresh", "fresh", correlation="k")
    await_(platform, "r1:5", "r1", "k")
    (cmd,) = until(lambda: commands.got, "a DeliverSignal")
    assert (cmd.command_id, cmd.payload["data"]) == ("fresh/r1:5", "fresh")
    assert svc.metric('headrace_signals_delivered_total{addressed="correlation"}') == 1


def test_an_offer_the_wait_did_not_take_goes_to_the_next_wait(
    platform: Settings, services: Callable[..., ServiceProcess], commands: Commands
) -> None:
    svc = services("signals")
    assert isinstance(svc, SignalsProcess)
    svc.wait_ready()
    await_(platform, "r1:5", "r1", "k")
    send(platform, "s1", 1, correlation="k")
    until(lambda: [c for c in commands.got if c.command_id == "s1/r1:5"], "the first offer")
    # the wait timed out before the orchestrator saw the offer: the signal comes back
    timed_out = CancelSignalWait("r1:5", "acme", "r1", "go", "k", "timed_out")
    produce(platform, messages_for([timed_out], platform.routing))
    await_(platform, "r2:3", "r2", "k")
    until(lambda: [c for c in commands.got if c.command_id == "s1/r2:3"], "the offer to r2")
    assert svc.metric("headrace_signals_returned_total") == 1


def test_a_message_on_the_wrong_partition_is_forwarded_and_garbage_dead_lettered(
    platform: Settings, services: Callable[..., ServiceProcess], commands: Commands
) -> None:
    svc = services("signals")
    assert isinstance(svc, SignalsProcess)
    svc.wait_ready()
    now = int(time.time() * 1000)
    body = signal_body(signal_id="s", signal="go", tenant="acme", data=7, time=now, correlation="k")
    home = signal_partition("acme/k", platform.partitions)
    wrong = (home + 1) % platform.partitions
    producer = make_producer(platform, "test-misrouted")
    producer.produce(platform.topics.signals, json.dumps(body), "acme/k", partition=wrong)
    producer.produce(platform.topics.signals, b"not json", b"junk", partition=wrong)
    flush(producer)
    until(
        lambda: svc.metric('headrace_signals_messages_total{op="signal",outcome="applied"}') == 1,
        "the forwarded signal to be applied at home",
    )
    assert svc.metric('headrace_signals_messages_total{op="signal",outcome="forwarded"}') == 1
    await_(platform, "r1:2", "r1", "k")
    (cmd,) = until(lambda: commands.got, "a DeliverSignal")
    assert cmd.payload["data"] == 7
    (dead,) = until(
        lambda: list(read_partition(platform.bootstrap, platform.topics.dlq, 0, 0)), "a dead letter"
    )
    assert dict(dead.headers)["headrace-error-code"] == b"HR-WIRE-001"
