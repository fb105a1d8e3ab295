"""The orchestrator on a real broker: runs complete, chains verify, bad input is dead-lettered."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from platform_kit import deploy_yaml, sequential, start_runs
from procs import ServiceProcess
from support import wait_for

from headrace.audit import audit_events
from headrace.services.responder import Responder
from headrace.settings import Settings
from headrace.streams.partition_reader import read_partition

pytestmark = pytest.mark.integration


def _all_finished(settings: Settings, n: int) -> bool:
    report = audit_events(settings)
    return len(report.runs) == n and report.by_status().get("completed", 0) == n


def test_runs_complete_with_verified_chains(
    platform: Settings, orchestrators: Callable[..., ServiceProcess], responder: Responder
) -> None:
    deploy_yaml(platform, sequential(3))
    orchestrators("a").start()
    runs = start_runs(platform, "seq3", 60)

    wait_for(lambda: _all_finished(platform, len(runs)), 90, "60 runs to complete")

    report = audit_events(platform)
    assert not report.broken, [str(r.report) for r in report.broken]
    for run in report.runs.values():
        assert run.report.count == 3 * 4 + 2  # RunStarted, 4 per task step, RunCompleted
        assert dict(run.steps_completed) == {"s1": 1, "s2": 1, "s3": 1}
        assert len(run.partitions) == 1


def test_poison_commands_go_to_dlq_and_other_runs_go_on(
    platform: Settings, orchestrators: Callable[..., ServiceProcess], responder: Responder
) -> None:
    from headrace.kafka import flush, make_producer

    deploy_yaml(platform, sequential(2))
    orchestrators("a").start()
    producer = make_producer(platform)
    producer.produce(platform.topics.commands, b"not avro at all", b"acme/x", partition=0)
    start_runs(platform, "no-such-workflow", 1, tenants=1, tag="ghost")
    runs = start_runs(platform, "seq2", 10)
    flush(producer)

    wait_for(lambda: _all_finished(platform, len(runs)), 90, "the good runs to complete")

    def dlq() -> list:
        return list(read_partition(platform.bootstrap, platform.topics.dlq, 0, 0))

    letters = wait_for(lambda: len(dlq()) >= 2 and dlq(), 30, "two dead letters")
    reasons = {dict(r.headers)["headrace-error-code"]: r for r in letters}
    assert set(reasons) == {b"HR-WIRE-001", b"HR-DEF-002"}
    bad = reasons[b"HR-WIRE-001"]
    assert bad.value == b"not avro at all"
    assert dict(bad.headers)["headrace-source-topic"] == platform.topics.commands.encode()
    ghost = dict(reasons[b"HR-DEF-002"].headers)["headrace-error"].decode()
    assert "no-such-workflow" in ghost and "headrace deploy" in ghost


BIG = """
type: big
version: 1
steps:
  - name: grow
    kind: set
    value: '[range(0; .n)] | map("item-\\(.)-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")'
    into: items
  - name: done
    kind: succeed
"""


def test_a_run_whose_events_are_too_large_for_kafka_is_dead_lettered_alone(
    platform: Settings, orchestrators: Callable[..., ServiceProcess], responder: Responder
) -> None:
    """A command whose events Kafka would refuse (here: a 1.6 MB step output) goes to the
    DLQ with the reason and writes nothing; the other runs of its batch go on, and the
    worker keeps running (it used to fail-stop on the same batch forever)."""
    import time

    from headrace.core.envelope import Command, CommandType
    from headrace.core.outbox import command_message
    from headrace.kafka import flush, make_producer

    deploy_yaml(platform, sequential(2))
    deploy_yaml(platform, BIG)
    worker = orchestrators("a").start()
    producer = make_producer(platform)
    for i, n in enumerate((3, 30_000, 3)):  # the middle one is too large
        start = Command(
            f"start-big-{i}",
            "tenant0",
            f"big-{i}",
            CommandType.StartRun,
            int(time.time() * 1000),
            {"workflow": "big", "version": None, "input": {"n": n}},
        )
        m = command_message(start, platform.routing)
        producer.produce(m.topic, m.value, m.key, partition=m.partition)
    flush(producer)
    runs = start_runs(platform, "seq2", 10)

    def finished() -> bool:
        by = audit_events(platform).by_status()
        return by.get("completed", 0) == len(runs) + 2

    wait_for(finished, 90, "every other run to complete")
    report = audit_events(platform)
    assert "tenant0/big-1" not in report.runs  # nothing of it was written
    assert {"tenant0/big-0", "tenant0/big-2"} <= set(report.runs)
    assert not report.broken

    def letters() -> list:
        return list(read_partition(platform.bootstrap, platform.topics.dlq, 0, 0))

    (letter,) = wait_for(letters, 30, "the dead letter")
    headers = dict(letter.headers)
    assert headers["headrace-error-code"] == b"HR-KAF-003"
    assert b"cannot be written to Kafka" in headers["headrace-error"]
    assert letter.key == b"tenant0/big-1"
    assert worker.alive


def test_crash_between_event_write_and_snapshot_loses_nothing(
    platform: Settings, orchestrators: Callable[..., ServiceProcess], responder: Responder
) -> None:
    """The worker dies after a batch's events are acked but before its snapshots are written."""
    deploy_yaml(platform, sequential(3))
    worker = orchestrators("a")
    worker.start({"HEADRACE_CRASH_POINT": "after-events", "HEADRACE_CRASH_PROBABILITY": "1"})
    runs = start_runs(platform, "seq3", 20)

    assert worker.proc is not None
    worker.proc.wait(60)
    assert worker.proc.returncode == -9, worker.log_tail()
    # The events of that batch are in the log although no snapshot has them.
    assert audit_events(platform).records > 0

    worker.start()
    wait_for(lambda: _all_finished(platform, len(runs)), 90, "runs to complete after the crash")
    report = audit_events(platform)
    assert not report.broken, [str(r.report) for r in report.broken]
    for run in report.runs.values():
        assert dict(run.steps_completed) == {"s1": 1, "s2": 1, "s3": 1}


def _garbage(raw: bytes) -> bytes:
    return b"\x7fnot a snapshot"


def _corrupt_flows(raw: bytes) -> bytes:
    """A snapshot whose header loads but whose (lazily decoded) flows do not."""
    import marshal

    v = marshal.loads(raw[1:])
    v[11] = {flow: b"\xff" for flow in v[11]}
    return raw[:1] + marshal.dumps(v, 2)


@pytest.mark.parametrize("spoil", [_garbage, _corrupt_flows], ids=["garbage", "flows"])
def test_an_unreadable_snapshot_is_rebuilt_from_the_events_log(
    platform: Settings, orchestrators: Callable[..., ServiceProcess], spoil: Callable
) -> None:
    """A snapshot this version cannot read (say, after a downgrade or a bad disk) is not
    trusted: the run's events are folded again and the run carries on — also when only a
    flow inside it, decoded when the command first uses it, is unreadable."""
    from rocksdict import Options, Rdict

    from headrace.core.codec import decode_event
    from headrace.core.envelope import Command, CommandType
    from headrace.core.outbox import command_message
    from headrace.kafka import make_producer, produce_sync

    deploy_yaml(platform, sequential(2))
    worker = orchestrators("a").start()
    ((tenant, run_id),) = start_runs(platform, "seq2", 1, tenants=1)
    partition = platform.routing.partition(tenant, run_id)

    def scheduled() -> list:
        recs = read_partition(platform.bootstrap, platform.topics.events, partition, 0)
        return [e for e in (decode_event(r.value) for r in recs) if e.type.value == "TaskScheduled"]

    (first,) = wait_for(scheduled, 60, "the first task to be scheduled")
    assert worker.stop() == 0

    db_path = next(worker.workdir.glob(f"data/orchestrator-a/**/runs-{partition}.db"))
    db = Rdict(str(db_path), Options(raw_mode=True))
    key = f"{tenant}/{run_id}".encode()
    db[key] = spoil(bytes(db[key]))
    db.close()

    worker.start()
    done = Command(
        "complete-1",
        tenant,
        run_id,
        CommandType.CompleteTask,
        first.time + 1,
        {"task_id": first.payload["task_id"], "attempt": 1, "result": {"ok": True}},
    )
    m = command_message(done, platform.routing)
    produce_sync(make_producer(platform), m.topic, m.value, key=m.key, partition=m.partition)

    (second,) = wait_for(
        lambda: [e for e in scheduled() if e.payload["step"] == "s2"], 60, "the second task"
    )
    assert second.seq > first.seq
    report = audit_events(platform)
    assert not report.broken
    assert "rebuilding it" in worker.log_path.read_text()
