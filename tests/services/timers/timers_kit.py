"""Helpers for the timer service's integration tests: run it, arm timers, watch what fires."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from procs import ServiceProcess
from support import wait_for

from headrace.core.codec import decode_command
from headrace.core.decider.effects import ArmTimer, CancelTimer
from headrace.core.envelope import canonical_json
from headrace.core.outbox import Outgoing, messages_for
from headrace.dev import free_port_block
from headrace.kafka import flush, make_producer
from headrace.settings import Settings


class TimersProcess(ServiceProcess):
    """``python -m headrace serve timers`` with its own metrics port."""

    def __init__(
        self,
        settings: Settings,
        workdir: Path,
        env: dict[str, str] | None = None,
        instance: str = "0",
    ):
        self.port = free_port_block(1)
        super().__init__(
            f"timers-{instance}",
            [
                "-m",
                "headrace",
                "serve",
                "timers",
                "--instance",
                instance,
                "--web-port",
                str(self.port),
            ],
            settings,
            workdir,
            env,
        )
        self.partitions = settings.partitions

    def metrics(self) -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read()
        out: dict[str, float] = {}
        for line in text.decode().splitlines():
            m = re.match(r"^(headrace_\w+(?:\{[^}]*\})?) (\S+)$", line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out

    def metric(self, name: str) -> float:
        return self.metrics().get(name, 0.0)

    def wait_ready(self, timeout: float = 90.0, partitions: int | None = None) -> None:
        """Until it fires ``partitions`` partitions (all by default): their tables recovered."""
        want = self.partitions if partitions is None else partitions

        def ready() -> bool:
            assert self.alive, f"timer service exited:\n{self.log_tail()}"
            return self.metric("headrace_timers_active_partitions") == want

        wait_for(ready, timeout, "the timer service to own every partition")


def arm(settings: Settings, timers: Iterable[tuple[str, str, int]], tenant: str = "acme") -> None:
    """Arm ``(timer_id, run_id, due)`` timers the way the orchestrator does (the outbox)."""
    produce(
        settings,
        messages_for(
            [ArmTimer(tid, tenant, run, "wait", due, None) for tid, run, due in timers],
            settings.routing,
        ),
    )


def cancel(settings: Settings, timer_id: str, run_id: str, tenant: str = "acme") -> None:
    produce(settings, messages_for([CancelTimer(timer_id, tenant, run_id)], settings.routing))


def op_message(settings: Settings, body: dict[str, Any]) -> Any:
    """A raw `timers` message (freeze/thaw/reset, which the outbox does not write yet)."""
    partition = settings.routing.partition(body["tenant"], body["run_id"])
    return Outgoing(
        settings.topics.timers,
        canonical_json(body).encode(),
        f"{body['tenant']}/{body['run_id']}",
        partition,
        [("headrace-op", body["op"].encode())],
    )


def produce(settings: Settings, messages: Iterable[Any]) -> None:
    producer = make_producer(settings, "test-timers", linger_ms=5)
    for i, m in enumerate(messages):
        kwargs: dict[str, Any] = {"key": m.key, "headers": m.headers}
        if m.partition is not None:
            kwargs["partition"] = m.partition
        while True:
            try:
                producer.produce(m.topic, m.value, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    flush(producer, 60)


@dataclass(frozen=True, slots=True)
class Fired:
    timer_id: str
    due: int  # the command's time: the timer's due time
    at: int  # the record's timestamp: when the service produced it
    partition: int
    key: str


class CommandTap:
    """Collects every command on ``commands`` (all partitions) in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.fired: list[Fired] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CommandTap:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        c = Consumer(
            {
                "bootstrap.servers": self.settings.bootstrap,
                "group.id": "test-tap",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        topic = self.settings.topics.commands
        c.assign([TopicPartition(topic, p, 0) for p in range(self.settings.partitions)])
        try:
            while not self._stop.is_set():
                for m in c.consume(1000, 0.1):
                    if m.error() is not None:
                        continue
                    cmd = decode_command(m.value())
                    f = Fired(
                        cmd.payload["timer_id"],
                        cmd.time,
                        m.timestamp()[1],
                        m.partition(),
                        m.key().decode(),
                    )
                    with self._lock:
                        self.fired.append(f)
        finally:
            c.close()

    def snapshot(self) -> list[Fired]:
        with self._lock:
            return list(self.fired)

    def counts(self) -> Counter[str]:
        return Counter(f.timer_id for f in self.snapshot())

    def first(self) -> dict[str, Fired]:
        out: dict[str, Fired] = {}
        for f in self.snapshot():
            out.setdefault(f.timer_id, f)
        return out


def now_ms() -> int:
    return int(time.time() * 1000)


def freeze_body(timer_id: str, run_id: str, at: int, policy: str, seq: int) -> dict[str, Any]:
    return {
        "op": "freeze",
        "timer_id": timer_id,
        "tenant": "acme",
        "run_id": run_id,
        "at": at,
        "policy": policy,
        "seq": seq,
    }


def thaw_body(timer_id: str, run_id: str, at: int, seq: int) -> dict[str, Any]:
    return {
        "op": "thaw",
        "timer_id": timer_id,
        "tenant": "acme",
        "run_id": run_id,
        "at": at,
        "seq": seq,
    }


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
