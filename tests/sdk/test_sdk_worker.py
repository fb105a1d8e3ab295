"""The worker on a real broker; the test plays the task service (dispatches in, results out)."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from typing import Any

import pytest
from sdk_kit import Dispatcher, Results, committed, free_port, http_get, make_dispatch
from support import wait_for

from headrace.core.task_codec import ResultKind
from headrace.sdk import NonRetryable, Retryable, TaskContext, Worker
from headrace.settings import Settings

pytestmark = pytest.mark.integration

Q = "payments"


def test_started_then_completed_with_the_dispatch_key_partition_and_attempt(
    platform: Settings, dispatcher: Dispatcher, results: Results, run_worker: Any
) -> None:
    worker = Worker(queues=[Q], concurrency=4, settings=platform, identity="w-one")

    @worker.task("charge-card")
    async def charge(input: Any, ctx: TaskContext) -> Any:
        return {"charged": input["amount"], "key": ctx.idempotency_key}

    run_worker(worker)
    ds = [
        make_dispatch(platform, Q, "charge-card", {"amount": i}, tenant=f"t{i}", attempt=2)
        for i in range(6)
    ]
    landed = dispatcher.send(*ds)
    for d in ds:
        final = results.final(d.task_id)
        [start] = results.of(d.task_id, ResultKind.STARTED)
        assert start.offset < final.offset
        for seen in (start, final):
            assert seen.key == d.result_key
            assert seen.partition == d.result_partition
            assert seen.result.attempt == 2
            assert seen.result.worker == "w-one"
        assert final.result.kind is ResultKind.COMPLETED
        assert final.result.output == {"charged": d.input["amount"], "key": d.idempotency_key}
    # the offsets are committed once the results are acknowledged
    for where in landed:
        wait_for(
            lambda where=where: committed(platform, Q, where) > where.offset,
            30,
            f"the commit past {where.topic}[{where.partition}]@{where.offset}",
        )


def test_exceptions_map_to_codes_and_retryability(
    platform: Settings, dispatcher: Dispatcher, results: Results, run_worker: Any
) -> None:
    worker = Worker(queues=[Q], concurrency=4, settings=platform)

    @worker.task("declined")
    def declined(input: Any) -> None:
        raise NonRetryable("card.declined", "insufficient funds", details={"psp": "acme"})

    @worker.task("busy")
    async def busy(input: Any) -> None:
        raise Retryable("psp.busy", "try later", retry_after_ms=2500)

    @worker.task("bug")
    def bug(input: Any, ctx: TaskContext) -> None:
        raise ZeroDivisionError("division by zero")

    @worker.task("bad-output")
    def bad_output(input: Any) -> Any:
        return {"when": object()}

    run_worker(worker)
    steps = ["declined", "busy", "bug", "bad-output", "no-such-step"]
    ds = {s: make_dispatch(platform, Q, s) for s in steps}
    dispatcher.send(*ds.values())
    errors = {s: results.final(d.task_id).result.error for s, d in ds.items()}
    assert all(e is not None for e in errors.values())
    got = {s: (e.code, e.retryable) for s, e in errors.items() if e is not None}
    assert got == {
        "declined": ("card.declined", False),
        "busy": ("psp.busy", True),
        "bug": ("worker.exception", True),
        "bad-output": ("worker.output_invalid", False),
        "no-such-step": ("worker.unknown_task", True),
    }
    assert errors["declined"].details == {"psp": "acme"}  # type: ignore[union-attr]
    assert errors["busy"].details == {"retry_after_ms": 2500}  # type: ignore[union-attr]
    assert errors["bug"].details["exception"] == "builtins.ZeroDivisionError"  # type: ignore[union-attr]
    assert "no-such-step" in errors["no-such-step"].message  # type: ignore[union-attr]


def test_unhandled_exceptions_can_be_configured_non_retryable(
    platform: Settings, dispatcher: Dispatcher, results: Results, run_worker: Any
) -> None:
    worker = Worker(
        queues=[Q],
        settings=platform,
        unhandled_code="payments.bug",
        unhandled_retryable=False,
    )

    @worker.task("*")
    def anything(input: Any) -> None:
        raise RuntimeError("oops")

    run_worker(worker)
    d = make_dispatch(platform, Q, "whatever")
    dispatcher.send(d)
    err = results.final(d.task_id).result.error
    assert err is not None and (err.code, err.retryable) == ("payments.bug", False)


def test_sync_handlers_run_in_the_pool_and_async_ones_on_the_loop(
    platform: Settings, dispatcher: Dispatcher, results: Results, run_worker: Any
) -> None:
    worker = Worker(queues=[Q], concurrency=3, settings=platform)

    @worker.task("sync")
    def sync(input: Any, ctx: TaskContext) -> Any:
        return {"thread": threading.current_thread().name, "step": ctx.step}

    @worker.task("async")
    async def async_(input: Any) -> Any:
        await asyncio.sleep(0)
        return {"thread": threading.current_thread().name}

    run_worker(worker)
    a, b = make_dispatch(platform, Q, "sync"), make_dispatch(platform, Q, "async")
    dispatcher.send(a, b)
    out_a = results.final(a.task_id).result.output
    out_b = results.final(b.task_id).result.output
    assert out_a["thread"].startswith("headrace-task") and out_a["step"] == "sync"
    assert not out_b["thread"].startswith("headrace-task")


def test_the_context_carries_the_attempt_identity_and_deadline(
    platform: Settings, dispatcher: Dispatcher, results: Results, run_worker: Any
) -> None:
    worker = Worker(queues=[Q], settings=platform)

    @worker.task("inspect")
    def inspect(input: Any, ctx: TaskContext) -> Any:
        return {
            "key": ctx.idempotency_key,
            "attempt": ctx.attempt,
            "last": ctx.last_attempt,
            "task": ctx.task_id,
            "run": ctx.run_id,
            "step": ctx.step,
            "deadline": ctx.deadline - ctx.started_ms if ctx.deadline else None,
            "config": ctx.config,
        }

    run_worker(worker)
    d = make_dispatch(
        platform,
        Q,
        "inspect",
        attempt=3,
        max_attempts=3,
        start_to_close_ms=12_000,
        config={"region": "eu"},
        idempotency_key="run-7/inspect",
    )
    dispatcher.send(d)
    assert results.final(d.task_id).result.output == {
        "key": "run-7/inspect",
        "attempt": 3,
        "last": True,
        "task": d.task_id,
        "run": d.run_id,
        "step": "inspect",
        "deadline": 12_000,
        "config": {"region": "eu"},
    }


def test_a_slow_handler_heartbeats_on_its_own_and_with_details(
    platform: Settings, dispatcher: Dispatcher, results: Results, run_worker: Any
) -> None:
    worker = Worker(queues=[Q], settings=platform)
    release = threading.Event()

    @worker.task("slow")
    def slow(input: Any, ctx: TaskContext) -> str:
        ctx.heartbeat({"phase": "copying"})
        release.wait(60)
        return "done"

    run_worker(worker)
    d = make_dispatch(platform, Q, "slow", heartbeat_ms=600)
    dispatcher.send(d)
    beats = wait_for(
        lambda: (b := results.of(d.task_id, ResultKind.HEARTBEAT)) and len(b) >= 5 and b,
        30,
        "five heartbeats of the slow task",
    )
    release.set()
    final = results.final(d.task_id)
    assert final.result.output == "done"
    # The explicit heartbeat's details went out (with the first worker beat at the latest).
    assert any(b.result.progress == {"phase": "copying"} for b in beats)
    assert all(b.key == d.result_key and b.partition == d.result_partition for b in beats)
    # Every gap between reports while working stays inside the 600 ms timeout (beats: 200 ms).
    times = [
        s.result.time for s in results.of(d.task_id) if s.result.kind is not ResultKind.COMPLETED
    ]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < 600, gaps


def test_no_heartbeats_without_a_heartbeat_timeout(
    platform: Settings, dispatcher: Dispatcher, results: Results, run_worker: Any
) -> None:
    worker = Worker(queues=[Q], settings=platform)
    release = threading.Event()

    @worker.task("quiet")
    def quiet(input: Any) -> str:
        release.wait(60)
        return "ok"

    run_worker(worker)
    d = make_dispatch(platform, Q, "quiet")
    dispatcher.send(d)
    wait_for(lambda: results.of(d.task_id, ResultKind.STARTED), 30, "started")
    # A second task on a beating schedule proves time passed long enough for beats.
    beat = make_dispatch(platform, Q, "quiet", heartbeat_ms=300)
    dispatcher.send(beat)
    wait_for(lambda: len(results.of(beat.task_id, ResultKind.HEARTBEAT)) >= 3, 30, "beats")
    release.set()
    results.final(d.task_id)
    assert results.of(d.task_id, ResultKind.HEARTBEAT) == []


def test_cancel_stops_an_async_handler(
    platform: Settings, dispatcher: Dispatcher, results: Results, run_worker: Any
) -> None:
    worker = Worker(queues=[Q], settings=platform)
    entered = threading.Event()

    @worker.task("forever")
    async def forever(input: Any, ctx: TaskContext) -> None:
        entered.set()
        await asyncio.Event().wait()

    run_worker(worker)
    d = make_dispatch(platform, Q, "forever")
    dispatcher.send(d)
    assert entered.wait(30)
    dispatcher.cancel(d)
    err = results.final(d.task_id).result.error
    assert err is not None and (err.code, err.retryable) == ("task.cancelled", False)


def test_a_redelivered_dispatch_of_a_running_attempt_runs_once(
    platform: Settings, dispatcher: Dispatcher, results: Results, run_worker: Any
) -> None:
    worker = Worker(queues=[Q], concurrency=4, settings=platform)
    calls: list[str] = []
    release = threading.Event()

    @worker.task("once")
    def once(input: Any, ctx: TaskContext) -> int:
        calls.append(ctx.task_id)
        release.wait(60)
        return len(calls)

    run_worker(worker)
    d = make_dispatch(platform, Q, "once")
    first = dispatcher.send(d)
    wait_for(lambda: results.of(d.task_id, ResultKind.STARTED), 30, "started")
    second = dispatcher.send(d)  # same attempt, delivered again
    release.set()
    results.final(d.task_id)
    after = make_dispatch(platform, Q, "once")
    dispatcher.send(d, after)  # and again after it was answered
    results.final(after.task_id)
    assert calls == [d.task_id, after.task_id]
    assert len(results.of(d.task_id, ResultKind.COMPLETED)) == 1
    for where in first + second:
        wait_for(lambda where=where: committed(platform, Q, where) > where.offset, 30, "commit")


def test_an_undecodable_dispatch_goes_to_the_dlq_and_the_queue_moves_on(
    platform: Settings, dispatcher: Dispatcher, results: Results, run_worker: Any
) -> None:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    worker = Worker(queues=[Q], settings=platform)

    @worker.task("fine")
    def fine(input: Any) -> str:
        return "ok"

    run_worker(worker)
    topic = platform.topics.tasks(Q)
    dispatcher.raw(topic, b"not avro at all", key="poison-1")
    d = make_dispatch(platform, Q, "fine")
    dispatcher.send(d)
    assert results.final(d.task_id).result.output == "ok"
    dlq = Consumer({"bootstrap.servers": platform.bootstrap, "group.id": "dlq-reader"})
    dlq.assign([TopicPartition(platform.topics.dlq, 0, OFFSET_BEGINNING)])
    try:
        msg = wait_for(lambda: (m := dlq.poll(0.2)) is not None and not m.error() and m, 30, "dlq")
        headers = dict(msg.headers() or [])
        assert msg.value() == b"not avro at all" and msg.key() == b"poison-1"
        assert headers["headrace-error-code"] == b"HR-WIRE-001"
        assert headers["headrace-source-topic"] == topic.encode()
    finally:
        dlq.close()


def test_higher_priority_bands_are_taken_first(
    platform: Settings, dispatcher: Dispatcher, results: Results, run_worker: Any
) -> None:
    worker = Worker(queues=[Q], concurrency=1, prefetch=1, settings=platform)
    order: list[int] = []
    gate = threading.Event()

    @worker.task("gate")
    def hold(input: Any) -> None:
        gate.wait(60)

    @worker.task("work")
    def work(input: Any) -> None:
        order.append(input["priority"])

    run_worker(worker)
    g = make_dispatch(platform, Q, "gate")
    dispatcher.send(g)
    wait_for(lambda: results.of(g.task_id, ResultKind.STARTED), 30, "the gate task to start")
    low = [make_dispatch(platform, Q, "work", {"priority": 2}, priority=2) for _ in range(15)]
    dispatcher.send(*low)
    high = [
        make_dispatch(platform, Q, "work", {"priority": p}, priority=p) for p in (9, 7, 8, 6, 9)
    ]
    dispatcher.send(*high)
    # Let the fetcher see the high bands' lag before the slot frees.
    wait_for(lambda: _fetched_all_bands(worker), 30, "the worker to see every band")
    gate.set()
    wait_for(lambda: len(order) == 20, 60, "all tasks")
    # At most the prefetched record of a lower band runs before the high ones.
    first_high = order[: len(high) + 1]
    assert sorted(p for p in first_high if p > 5) == [6, 7, 8, 9, 9], order


def _fetched_all_bands(worker: Worker) -> bool:
    fetcher = worker._fetchers[0]
    return bool(fetcher._buffered) and bool(fetcher._paused)


def test_a_worker_joining_mid_stream_takes_partitions_without_running_anything_twice(
    platform: Settings, dispatcher: Dispatcher, results: Results, run_worker: Any
) -> None:
    def make(identity: str) -> Worker:
        worker = Worker(queues=[Q], concurrency=8, settings=platform, identity=identity)

        @worker.task("step")
        async def step(input: Any) -> int:
            await asyncio.sleep(0.05)  # a little work, so attempts are in flight at the rebalance
            return input["i"]

        return worker

    def done_by(worker: str | None = None) -> int:
        with results._lock:
            return sum(
                1
                for s in results.seen
                if s.result.kind is ResultKind.COMPLETED
                and (worker is None or s.result.worker == worker)
            )

    run_worker(make("w-a"))
    tasks: list[Any] = []
    deadline = time.monotonic() + 90
    # Keep a backlog flowing until the second worker has joined and done some of it,
    # so attempts are in flight on the partitions that move.
    while done_by("w-b") < 20 and time.monotonic() < deadline:
        batch = [make_dispatch(platform, Q, "step", {"i": len(tasks) + i}) for i in range(16)]
        dispatcher.send(*batch)
        tasks.extend(batch)
        wait_for(lambda: done_by() >= len(tasks) - 48, 60, "the backlog to shrink")
        if len(tasks) == 48:
            run_worker(make("w-b"))
    finals = [results.final(t.task_id, 90) for t in tasks]
    assert [f.result.output for f in finals] == list(range(len(tasks)))
    assert {f.result.worker for f in finals} == {"w-a", "w-b"}
    starts = {t.task_id: len(results.of(t.task_id, ResultKind.STARTED)) for t in tasks}
    assert set(starts.values()) == {1}, {k: v for k, v in starts.items() if v != 1}


def test_an_attempt_cancelled_before_it_started_never_runs(
    platform: Settings, dispatcher: Dispatcher, results: Results, run_worker: Any
) -> None:
    worker = Worker(queues=[Q], concurrency=1, settings=platform)
    gate = threading.Event()
    ran: list[str] = []

    @worker.task("hold")
    def hold(input: Any) -> None:
        gate.wait(60)

    @worker.task("work")
    def work(input: Any, ctx: TaskContext) -> None:
        ran.append(ctx.task_id)

    run_worker(worker)
    busy = make_dispatch(platform, Q, "hold")
    [held] = dispatcher.send(busy)
    wait_for(lambda: results.of(busy.task_id, ResultKind.STARTED), 30, "the slot to be taken")
    doomed, after = make_dispatch(platform, Q, "work"), make_dispatch(platform, Q, "work")
    # Off the held task's partition: commits there cannot pass the task in progress.
    other = (held.partition + 1) % platform.partitions
    dispatcher.send(doomed, partition=other)
    [cancel] = dispatcher.cancel(doomed, partition=other)
    landed = dispatcher.send(after, partition=other)
    # The cancel is committed only once the waiting attempt is dropped with it.
    wait_for(lambda: committed(platform, Q, cancel) > cancel.offset, 30, "the cancel to be taken")
    gate.set()
    results.final(after.task_id)
    assert ran == [after.task_id]
    assert results.of(doomed.task_id) == []
    wait_for(lambda: committed(platform, Q, landed[0]) > landed[0].offset, 30, "commit")


def test_a_result_too_large_for_kafka_fails_the_task_and_the_partition_moves_on(
    platform: Settings, dispatcher: Dispatcher, results: Results, run_worker: Any
) -> None:
    worker = Worker(queues=[Q], concurrency=4, settings=platform)

    @worker.task("huge")
    def huge(input: Any) -> str:
        return "x" * 2_000_000  # over librdkafka's message.max.bytes

    @worker.task("fine")
    async def fine(input: Any) -> str:
        return "ok"

    run_worker(worker)
    big, later = make_dispatch(platform, Q, "huge"), make_dispatch(platform, Q, "fine")
    landed = dispatcher.send(big, later, partition=1)
    err = results.final(big.task_id, 15).result.error
    assert err is not None and (err.code, err.retryable) == ("worker.output_too_large", False)
    assert err.details["size_bytes"] > 2_000_000
    assert err.details["limit_bytes"] == 1_000_000
    assert results.final(later.task_id, 15).result.output == "ok"
    # the huge task's offset was released: commits pass both dispatches
    last = landed[-1]
    wait_for(lambda: committed(platform, Q, last) > last.offset, 15, "the commit past both")


def test_a_result_the_broker_refuses_as_too_large_fails_the_task_instead_of_resending(
    platform: Settings, dispatcher: Dispatcher, results: Results, run_worker: Any
) -> None:
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    from headrace.kafka import make_admin

    # Under the worker's own limit, over the topic's: the broker refuses the delivery.
    resource = ConfigResource(
        ResourceType.TOPIC,
        platform.topics.task_results,
        incremental_configs=[
            ConfigEntry("max.message.bytes", "20000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin = make_admin(platform)
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(10)
    worker = Worker(queues=[Q], concurrency=4, settings=platform)

    @worker.task("big")
    def big_output(input: Any) -> str:
        return os.urandom(60_000).hex()  # incompressible enough to stay over 20 kB in lz4

    @worker.task("fine")
    async def fine(input: Any) -> str:
        return "ok"

    run_worker(worker)
    # One run: their reports share a result partition, so they may share a batch.
    big = make_dispatch(platform, Q, "big", run_id="run-big")
    later = make_dispatch(platform, Q, "fine", run_id="run-big")
    landed = dispatcher.send(big, later, partition=2)
    err = results.final(big.task_id, 15).result.error
    assert err is not None and (err.code, err.retryable) == ("worker.output_too_large", False)
    assert "max.message.bytes" in err.message
    assert results.final(later.task_id, 15).result.output == "ok"
    last = landed[-1]
    wait_for(lambda: committed(platform, Q, last) > last.offset, 15, "the commit past both")


def test_the_metrics_port_serves_healthz_and_metrics_on_the_web_host_only(
    platform: Settings, dispatcher: Dispatcher, results: Results, run_worker: Any
) -> None:
    import json

    host = "127.0.0.2"  # HEADRACE_WEB_HOST: not the default, to see it honoured
    settings = platform.model_copy(update={"web_host": host})
    worker = Worker(queues=[Q], concurrency=2, settings=settings)
    assert worker.health() == (
        False,
        {"status": "starting", "worker": worker.identity, "queues": [Q]},
    )
    gate = threading.Event()

    @worker.task("hold")
    def hold(input: Any) -> None:
        gate.wait(30)

    port = free_port(host)
    t = run_worker(worker, metrics_port=port)
    try:
        status, body = wait_for(
            lambda: (r := http_get(host, port, "/healthz"))[0] == 200 and r, 15, "healthy"
        )
        assert json.loads(body)["status"] == "ok"
        status, body = http_get(host, port, "/metrics")
        assert status == 200 and b"headrace_worker_in_flight" in body
        assert http_get(host, port, "/")[0] == 404
        with pytest.raises(ConnectionRefusedError):
            http_get("127.0.0.1", port, "/healthz")  # not every interface, only the web host

        d = make_dispatch(platform, Q, "hold")
        dispatcher.send(d)
        wait_for(lambda: results.of(d.task_id, ResultKind.STARTED), 15, "the task to start")
        worker.stop()  # the drain waits for the held task
        status, body = wait_for(
            lambda: (r := http_get(host, port, "/healthz"))[0] == 503 and r, 5, "draining"
        )
        assert json.loads(body)["status"] == "draining"
    finally:
        gate.set()
    t.stop()
    with pytest.raises(ConnectionRefusedError):
        http_get(host, port, "/healthz")  # closed with the worker
