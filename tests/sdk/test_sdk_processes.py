"""Workers as real processes (``headrace worker run``): SIGTERM drains, kill -9 redelivers,
two processes share a queue."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from procs import ServiceProcess
from sdk_kit import Dispatcher, Results, committed, group_members, make_dispatch
from support import wait_for

from headrace.core.task_codec import ResultKind
from headrace.settings import Settings

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
Q = "jobs"


class WorkerProcess(ServiceProcess):
    """``python -m headrace worker run worker_app:worker`` serving queue ``jobs``."""

    def __init__(self, settings: Settings, workdir: Path, gates: Path, name: str) -> None:
        super().__init__(
            name,
            ["-m", "headrace", "worker", "run", "worker_app:worker", "--concurrency", "2"],
            settings,
            workdir / name,
            env={
                "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
                "TEST_GATE_DIR": str(gates),
                "TEST_QUEUE": Q,
                "HEADRACE_LOG_LEVEL": "INFO",
            },
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def gates(tmp_path: Path) -> Path:
    path = tmp_path / "gates"
    path.mkdir()
    return path


@pytest.fixture
def workers(platform: Settings, tmp_path: Path, gates: Path):
    made: list[WorkerProcess] = []

    def make(name: str) -> WorkerProcess:
        w = WorkerProcess(platform, tmp_path, gates, name)
        made.append(w)
        w.start()
        wait_for(lambda: "serving" in w.log_text() or not w.alive, 120, f"{name} to start")
        assert w.alive, w.log_tail()
        return w

    yield make
    for w in made:
        w.stop(30)


def test_sigterm_drains_finishes_in_flight_commits_and_takes_nothing_new(
    platform: Settings, dispatcher: Dispatcher, results: Results, workers, gates: Path
) -> None:
    w1 = workers("worker-1")
    slow = make_dispatch(platform, Q, "gated", {"gate": "g1"})
    [where] = dispatcher.send(slow)
    start = wait_for(lambda: results.of(slow.task_id, ResultKind.STARTED), 60, "started")
    assert start[0].result.worker.endswith(f":{w1.pid}")

    assert w1.proc is not None
    w1.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "draining" in w1.log_text(), 30, "the worker to begin its drain")
    later = make_dispatch(platform, Q, "echo", {"n": 2})
    dispatcher.send(later)
    (gates / "g1").touch()

    assert w1.proc.wait(60) == 0, w1.log_tail()
    final = results.final(slow.task_id)
    assert final.result.kind is ResultKind.COMPLETED
    assert final.result.output == {"pid": w1.pid}
    assert committed(platform, Q, where) > where.offset  # committed before it left
    assert "left group" in w1.log_text()
    assert results.of(later.task_id) == []  # a draining worker takes nothing new

    w2 = workers("worker-2")
    assert results.final(later.task_id, 60).result.output == {"pid": w2.pid, "input": {"n": 2}}
    assert len(results.of(slow.task_id, ResultKind.STARTED)) == 1  # not done twice


def test_a_killed_workers_task_is_delivered_again_to_the_next_worker(
    platform: Settings, dispatcher: Dispatcher, results: Results, workers, gates: Path
) -> None:
    w1 = workers("worker-1")
    task = make_dispatch(platform, Q, "gated", {"gate": "g"})
    dispatcher.send(task)
    wait_for(lambda: results.of(task.task_id, ResultKind.STARTED), 60, "started on worker 1")
    w1.kill9()
    (gates / "g").touch()

    w2 = workers("worker-2")
    final = results.final(task.task_id, 90)  # after the dead member's session times out
    assert final.result.output == {"pid": w2.pid}
    starts = [s.result.worker for s in results.of(task.task_id, ResultKind.STARTED)]
    assert [w.rsplit(":", 1)[1] for w in starts] == [str(w1.pid), str(w2.pid)]
    assert len(results.of(task.task_id, ResultKind.COMPLETED)) == 1
    assert all(s.key == task.result_key for s in results.of(task.task_id))


def test_two_worker_processes_share_a_queue(
    platform: Settings, dispatcher: Dispatcher, results: Results, workers
) -> None:
    w1, w2 = workers("worker-1"), workers("worker-2")
    wait_for(
        lambda: (m := group_members(platform, Q)) and len(m) == 2 and all(m),
        90,
        "both workers to hold partitions of the queue",
    )
    tasks = [
        make_dispatch(platform, Q, "echo", {"i": i}, priority=(5, 6, 7, 8, 9)[i % 5])
        for i in range(60)
    ]
    dispatcher.send(*tasks)
    finals = [results.final(t.task_id, 60) for t in tasks]
    pids = [f.result.output["pid"] for f in finals]
    assert set(pids) == {w1.pid, w2.pid}
    for t in tasks:
        assert len(results.of(t.task_id, ResultKind.COMPLETED)) == 1
