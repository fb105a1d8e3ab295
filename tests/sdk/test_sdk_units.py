"""Worker SDK pieces without a broker: failures, handler lookup, offsets, heartbeats, slots."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from hypothesis import given
from hypothesis import strategies as st
from sdk_kit import make_dispatch
from support import wait_for

from headrace.sdk import NonRetryable, Retryable, TaskContext
from headrace.sdk.errors import UNHANDLED_CODE, failure_of
from headrace.sdk.handlers import Handlers, make_handler
from headrace.sdk.offsets import PartitionOffsets
from headrace.sdk.slots import Slots
from headrace.settings import Settings

SETTINGS = Settings(bootstrap="unused:9092", topic_prefix="u.")


def dispatch(step: str = "charge", **kw: Any):
    return make_dispatch(SETTINGS, "pay", step, {"n": 1}, **kw)


# -- failures ------------------------------------------------------------------------


def test_non_retryable_keeps_code_message_details_and_is_not_retryable() -> None:
    f = failure_of(NonRetryable("card.declined", "insufficient funds", details={"psp": "x"}))
    assert (f.code, f.message, f.retryable, f.details) == (
        "card.declined",
        "insufficient funds",
        False,
        {"psp": "x"},
    )


def test_retryable_carries_retry_after_hint_in_details() -> None:
    f = failure_of(Retryable("psp.busy", "try later", retry_after_ms=1500))
    assert f.retryable is True
    assert f.details == {"retry_after_ms": 1500}
    assert f.retry_after_ms == 1500


def test_any_other_exception_is_retryable_worker_exception_with_traceback() -> None:
    def boom() -> None:
        raise KeyError("amount")

    try:
        boom()
    except KeyError as exc:
        f = failure_of(exc)
    assert f.code == UNHANDLED_CODE == "worker.exception"
    assert f.retryable is True
    assert f.message == "KeyError: 'amount'"
    assert f.details["exception"] == "builtins.KeyError"
    assert "in boom" in f.details["traceback"]


def test_unhandled_code_is_configurable() -> None:
    assert failure_of(RuntimeError("x"), "payments.bug").code == "payments.bug"


def test_a_failure_needs_a_code() -> None:
    with pytest.raises(ValueError, match="needs a code"):
        Retryable("", "no code")


# -- handlers ------------------------------------------------------------------------


def test_handler_shapes_are_detected_once() -> None:
    async def a_ctx(input: Any, ctx: Any) -> None: ...

    def s_input(input: Any) -> None: ...

    class AsyncCallable:
        async def __call__(self, input: Any, ctx: Any) -> None: ...

    assert (make_handler("a", a_ctx).is_async, make_handler("a", a_ctx).takes_context) == (
        True,
        True,
    )
    assert (make_handler("s", s_input).is_async, make_handler("s", s_input).takes_context) == (
        False,
        False,
    )
    h = make_handler("c", AsyncCallable())
    assert h.is_async and h.takes_context


def test_a_handler_without_arguments_is_refused() -> None:
    with pytest.raises(TypeError, match="takes no arguments"):
        make_handler("x", lambda: None)


def test_lookup_prefers_config_task_then_step_then_catch_all() -> None:
    handlers = Handlers()
    handlers.add("charge-card", lambda i: "by-task")
    handlers.add("charge", lambda i: "by-step")
    handlers.add("*", lambda i: "any")
    find = handlers.find
    assert find(dispatch("charge", config={"task": "charge-card"})).name == "charge-card"  # type: ignore[union-attr]
    assert find(dispatch("charge", config={"task": "unknown"})).name == "charge"  # type: ignore[union-attr]
    assert find(dispatch("charge")).name == "charge"  # type: ignore[union-attr]
    assert find(dispatch("refund")).name == "*"  # type: ignore[union-attr]


def test_lookup_without_catch_all_finds_nothing_for_unknown_steps() -> None:
    handlers = Handlers()
    handlers.add("charge", lambda i: None)
    assert handlers.find(dispatch("refund")) is None


def test_registering_a_name_twice_is_an_error() -> None:
    handlers = Handlers()
    handlers.add("charge", lambda i: None)
    with pytest.raises(ValueError, match="registered twice"):
        handlers.add("charge", lambda i: None)


# -- offsets -------------------------------------------------------------------------


@given(st.lists(st.integers(0, 200), min_size=1, max_size=60, unique=True), st.randoms())
def test_committable_offset_never_passes_an_unfinished_dispatch(
    offsets: list[int], rnd: Any
) -> None:
    offsets.sort()
    tracker = PartitionOffsets()
    for o in offsets:
        tracker.add(o)
    unfinished = set(offsets)
    order = list(offsets)
    rnd.shuffle(order)
    for o in order:
        tracker.finish(o)
        unfinished.discard(o)
        pos = tracker.position()
        assert pos is not None
        if unfinished:
            assert pos == min(unfinished)
        else:
            assert pos == offsets[-1] + 1
        assert tracker.in_progress() == len(unfinished)


@given(st.lists(st.integers(0, 100), min_size=2, max_size=40, unique=True), st.data())
def test_abandoned_offsets_hold_commits_back_but_do_not_count_as_running(
    offsets: list[int], data: st.DataObject
) -> None:
    offsets.sort()
    abandoned = data.draw(st.sets(st.sampled_from(offsets), min_size=1))
    tracker = PartitionOffsets()
    for o in offsets:
        tracker.add(o)
    for o in offsets:
        if o in abandoned:
            tracker.abandon(o)
        else:
            tracker.finish(o)
    assert tracker.in_progress() == 0
    assert tracker.position() == min(abandoned)


def test_to_commit_reports_each_new_position_once() -> None:
    tracker = PartitionOffsets()
    assert tracker.to_commit() is None
    tracker.add(5)
    assert tracker.to_commit() == 5
    assert tracker.to_commit() is None
    tracker.finish(5)
    assert tracker.to_commit() == 6


def test_a_position_whose_async_commit_failed_is_handed_out_again() -> None:
    tracker = PartitionOffsets()
    tracker.add(5)
    tracker.finish(5)
    assert tracker.to_commit() == 6
    assert tracker.to_commit() is None  # in flight: not committed twice
    tracker.commit_failed(6)
    assert tracker.to_commit() == 6


def test_a_failed_commit_overtaken_by_a_later_one_is_not_retried() -> None:
    tracker = PartitionOffsets()
    tracker.add(5)
    assert tracker.to_commit() == 5
    tracker.finish(5)
    assert tracker.to_commit() == 6
    tracker.commit_failed(5)  # the commit of 6 covers it
    assert tracker.to_commit() is None


def test_the_last_commit_carries_the_position_even_when_it_did_not_move() -> None:
    tracker = PartitionOffsets()
    assert tracker.to_commit_now() is None  # nothing fetched: nothing to commit
    tracker.add(5)
    tracker.finish(5)
    assert tracker.to_commit() == 6
    assert tracker.to_commit_now() == 6  # the async commit of 6 may not have landed
    assert tracker.to_commit() is None


class FakeConsumer:
    """Records commits; what a fetcher needs of a consumer for rebalances and commits."""

    def __init__(self) -> None:
        self.commits: list[tuple[list[tuple[str, int, int]], bool]] = []

    def commit(self, *, offsets: list[Any], asynchronous: bool) -> Any:
        self.commits.append(([(t.topic, t.partition, t.offset) for t in offsets], asynchronous))
        return None if asynchronous else offsets

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        return partitions

    def close(self) -> None:
        pass


def _fetcher() -> tuple[Any, FakeConsumer, Any, PartitionOffsets]:
    from confluent_kafka import TopicPartition

    from headrace.sdk.fetcher import QueueFetcher

    fetcher = QueueFetcher(
        "pay",
        SETTINGS,
        slots=Slots(1),
        deliver=lambda batch: None,
        dead_letter=lambda *a: None,
        prefetch=1,
        revoke_grace=0,
    )
    fetcher._consumer.close()
    fake = fetcher._consumer = FakeConsumer()
    tp = TopicPartition(SETTINGS.topics.tasks("pay"), 0)
    fetcher._on_assign(fake, [tp])
    offsets = fetcher._parts[(tp.topic, 0)].offsets
    for o in (0, 1, 2):
        offsets.add(o)
        offsets.finish(o)
    return fetcher, fake, tp, offsets


def test_the_fetcher_commits_again_a_position_whose_async_commit_failed() -> None:
    from confluent_kafka import TopicPartition

    fetcher, fake, tp, _ = _fetcher()
    fetcher._commit(0.0)
    fetcher._commit(0.0)
    assert fake.commits == [([(tp.topic, 0, 3)], True)]
    fetcher._on_commit(KafkaError(KafkaError.REQUEST_TIMED_OUT), [TopicPartition(tp.topic, 0, 3)])
    fetcher._commit(0.0)
    assert fake.commits[-1] == ([(tp.topic, 0, 3)], True)
    assert len(fake.commits) == 2


def test_a_revoke_commits_the_position_synchronously_even_when_it_did_not_move() -> None:
    fetcher, fake, tp, _ = _fetcher()
    fetcher._commit(0.0)  # async; whether it landed is not known yet
    fetcher._on_revoke(fake, [tp])
    assert fake.commits == [([(tp.topic, 0, 3)], True), ([(tp.topic, 0, 3)], False)]
    assert fetcher._parts == {}


def test_the_drain_commits_the_position_synchronously_even_when_it_did_not_move() -> None:
    fetcher, fake, tp, _ = _fetcher()
    fetcher._commit(0.0)
    fetcher._consumer.pause = fetcher._consumer.poll = lambda *a: None  # type: ignore[attr-defined]
    fetcher._drain()
    assert fake.commits[-1] == ([(tp.topic, 0, 3)], False)


def test_a_revoked_partition_ignores_late_finishes() -> None:
    tracker = PartitionOffsets()
    tracker.add(1)
    tracker.revoked = True
    tracker.finish(1)
    assert tracker.in_progress() == 1


# -- result sender -------------------------------------------------------------------


class FakeProducer:
    """Answers each produce with the next scripted delivery error (None: delivered)."""

    def __init__(self, verdicts: list[Any]) -> None:
        self.verdicts = verdicts
        self.produced = 0

    def produce(self, topic: str, **kw: Any) -> None:
        self.produced += 1
        verdict = self.verdicts.pop(0) if self.verdicts else None
        if isinstance(verdict, Exception):
            raise verdict
        kw["on_delivery"](verdict, object())

    def poll(self, timeout: float) -> int:
        time.sleep(timeout)
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def _sender(verdicts: list[Any]) -> Any:
    from headrace.sdk.results import ResultSender

    sender = ResultSender(SETTINGS, "test")
    sender.producer = FakeProducer(verdicts)  # type: ignore[assignment]
    return sender


def test_a_passing_delivery_error_sends_the_report_again() -> None:
    sender = _sender([KafkaError(KafkaError._MSG_TIMED_OUT), None])
    acked, refused = [], []
    sender.send("t", b"v", "k", 0, acked=lambda: acked.append(1), refused=refused.append)
    assert (sender.producer.produced, acked, refused) == (2, [1], [])
    sender.close(0)


@pytest.mark.parametrize(
    "verdict",
    [
        KafkaError(KafkaError.MSG_SIZE_TOO_LARGE),  # the broker's, in the delivery report
        KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)),  # librdkafka's, at once
        KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED),
    ],
)
def test_a_permanent_delivery_error_is_not_sent_again_but_refused(verdict: Any) -> None:
    sender = _sender([verdict, None])
    acked: list[int] = []
    refused: list[Any] = []
    sender.send("t", b"v", "k", 0, acked=lambda: acked.append(1), refused=refused.append)
    assert (sender.producer.produced, acked, len(refused)) == (1, [], 1)
    sender.close(0)


def test_a_passing_error_at_produce_time_is_retried_after_a_pause() -> None:
    sender = _sender([KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC)), None])
    acked: list[int] = []
    sender.send("t", b"v", "k", 0, acked=lambda: acked.append(1))
    wait_for(lambda: acked == [1], 5, "the second try")
    assert sender.producer.produced == 2
    sender.close(0)


# -- heartbeats ----------------------------------------------------------------------


def _ctx(gap_ms: int, **kw: Any) -> tuple[TaskContext, list[Any]]:
    beats: list[Any] = []
    now = time.time_ns() // 1_000_000
    ctx = TaskContext(dispatch(**kw), "w1", now, lambda c, p: beats.append(p), gap_ms)
    return ctx, beats


def test_heartbeats_closer_than_the_gap_are_merged_into_the_next_beat() -> None:
    ctx, beats = _ctx(60_000)
    ctx.heartbeat({"done": 1})
    ctx.heartbeat({"done": 2})
    assert beats == []  # both within the gap after `started`
    ctx.auto_beat(time.time_ns() // 1_000_000)
    assert beats == [{"done": 2}]  # the latest details ride the worker's own beat
    ctx.auto_beat(time.time_ns() // 1_000_000)
    assert beats == [{"done": 2}, None]


def test_a_heartbeat_after_the_gap_goes_out_at_once() -> None:
    ctx, beats = _ctx(0)
    ctx.heartbeat({"rows": 10})
    ctx.heartbeat()
    assert beats == [{"rows": 10}, None]


def test_heartbeat_is_safe_from_many_threads() -> None:
    ctx, beats = _ctx(0)
    threads = [
        threading.Thread(target=lambda: [ctx.heartbeat(1) for _ in range(200)]) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(beats) == 800


def test_context_exposes_the_attempt() -> None:
    ctx, _ = _ctx(0, attempt=3, max_attempts=3, config={"a": 1})
    d = ctx.dispatch
    assert ctx.idempotency_key == d.idempotency_key
    assert (ctx.attempt, ctx.last_attempt, ctx.task_id, ctx.run_id, ctx.step) == (
        3,
        True,
        d.task_id,
        d.run_id,
        "charge",
    )
    assert ctx.config == {"a": 1}
    assert ctx.deadline == ctx.started_ms + 30_000
    left = ctx.time_left()
    assert left is not None and 29 < left <= 30


# -- slots ---------------------------------------------------------------------------


def test_slots_wake_a_waiter_when_one_frees() -> None:
    slots = Slots(1)
    assert slots.take(5) == 1
    assert slots.wait_free(0.01) is False
    woke = threading.Event()

    def waiter() -> None:
        if slots.wait_free(10):
            woke.set()

    t = threading.Thread(target=waiter)
    t.start()
    slots.give()
    t.join(10)
    assert woke.is_set()


# -- headrace worker run -------------------------------------------------------------


def test_worker_run_loads_a_worker_object_or_factory_and_explains_mistakes() -> None:
    from headrace.cli.worker import load_worker
    from headrace.errors import HeadraceError
    from headrace.sdk import Worker

    loaded = load_worker("worker_app:worker")
    assert isinstance(loaded, Worker) and loaded.handlers.names() == ["echo", "gated"]
    for spec, needle in [
        ("worker_app", "module:attribute"),
        ("no_such_module_x:worker", "cannot import"),
        ("worker_app:nope", "no attribute"),
        ("worker_app:GATES", "not a headrace.sdk.Worker"),
        (
            "worker_app:Worker",
            "worker_app:Worker must name a Worker instance, got the Worker class "
            "headrace.sdk.worker.Worker",
        ),
        ("worker_app:Path", "must name a Worker instance, got the class pathlib.Path"),
    ]:
        with pytest.raises(HeadraceError) as info:
            load_worker(spec)
        assert needle in info.value.message
