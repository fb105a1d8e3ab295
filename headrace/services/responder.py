"""A stand-in for the task service: answers every task request at once.

Until the task service exists, tests and benchmarks complete tasks with this:
it reads ``schedule`` messages from ``task-requests`` and writes a
``CompleteTask`` command (result ``{"echo": <input>, "attempt": n}``) — or a
``FailTask`` for queues listed in ``fail_queues`` — to ``commands``. It keeps
no state; redelivered requests are answered twice and the orchestrator
ignores the second answer (the attempt is no longer pending).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from headrace.core.envelope import Command, CommandType
from headrace.core.outbox import command_message
from headrace.kafka import flush, make_consumer, make_producer
from headrace.settings import Settings

log = logging.getLogger("headrace.responder")


def answer(request: dict[str, Any], fail_queues: frozenset[str], now_ms: int) -> Command | None:
    """The command answering one ``task-requests`` message (None for non-schedule ops)."""
    if request.get("op") != "schedule":
        return None
    task_id = request["task_id"]
    if request.get("queue") in fail_queues:
        return Command(
            command_id=f"{task_id}/failed",
            tenant=request["tenant"],
            run_id=request["run_id"],
            type=CommandType.FailTask,
            time=now_ms,
            payload={
                "task_id": task_id,
                "attempt": request.get("attempt"),
                "error": {"code": "responder.fail", "message": "scripted failure"},
            },
        )
    return Command(
        command_id=f"{task_id}/completed",
        tenant=request["tenant"],
        run_id=request["run_id"],
        type=CommandType.CompleteTask,
        time=now_ms,
        payload={
            "task_id": task_id,
            "attempt": request.get("attempt"),
            "result": {"echo": request.get("input"), "attempt": request.get("attempt")},
        },
    )


class Responder:
    """Consumes ``task-requests`` in a thread and answers each request."""

    def __init__(
        self,
        settings: Settings,
        *,
        fail_queues: frozenset[str] = frozenset(),
        group: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.fail_queues = fail_queues
        self.group = group or f"{settings.topic_prefix}responder"
        self.clock = clock
        self.answered = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Responder:
        self._thread = threading.Thread(target=self.run, name="responder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def run(self) -> None:
        consumer = make_consumer(self.settings, self.group, fetch_wait_max_ms=5)
        producer = make_producer(self.settings, "headrace-responder", linger_ms=1)
        routing = self.settings.routing
        consumer.subscribe([self.settings.topics.task_requests])
        try:
            while not self._stop.is_set():
                # consume(n, t) waits for n messages or t seconds: take the first
                # message as soon as it comes, then whatever is already fetched.
                first = consumer.poll(0.1)
                if first is None:
                    continue
                msgs = [first, *consumer.consume(499, 0)]
                now = int(self.clock() * 1000)
                for m in msgs:
                    value = m.value()
                    if m.error() is not None or value is None:
                        continue
                    try:
                        request = json.loads(value)
                        command = answer(request, self.fail_queues, now)
                    except (ValueError, KeyError) as exc:
                        log.warning("responder: unreadable task request skipped: %s", exc)
                        continue
                    if command is None:
                        continue
                    out = command_message(command, routing)
                    assert out.partition is not None  # commands go to their run's partition
                    producer.produce(out.topic, out.value, out.key, partition=out.partition)
                    self.answered += 1
                flush(producer)
                consumer.commit(asynchronous=False)
        finally:
            consumer.close()


def main() -> None:
    """``python -m headrace.services.responder [fail-queue ...]``"""
    import sys

    from headrace.logs import configure
    from headrace.settings import get_settings

    settings = get_settings()
    configure(settings.log_level, settings.log_format, "responder")
    Responder(settings, fail_queues=frozenset(sys.argv[1:])).run()


if __name__ == "__main__":
    main()
