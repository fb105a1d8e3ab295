"""Task round trips through the whole engine: orchestrator, task service and a worker.

Runs ``headrace serve orchestrator`` and ``headrace serve tasks`` as subprocesses
against HEADRACE_BOOTSTRAP (default 127.0.0.1:9092) on throwaway topics, with a
minimal worker process (confluent-kafka, the protocol of docs/tasks.md: it
answers ``started`` then ``completed`` at once), and measures

  latency     runs of --steps sequential task steps started at --rate runs/s
              (low load): per step transition, the round trip from the
              ``TaskScheduled`` event of one step to the ``TaskScheduled`` of
              the next (record timestamps of ``events``), p50/p99 — and its
              two legs: scheduled -> the worker has the dispatch, and the
              worker's ``completed`` -> next step scheduled;
  saturation  --runs runs started at once: tasks completed per second, from the
              first task scheduled to the last;
  L2          bench/kafka_baseline.py's consume -> produce -> commit relay,
              measured in the same run, for scale.

    python bench/tasks.py [--steps 5] [--rate 20] [--seconds 20] [--runs 2000]

Goal (issue 5): round-trip p50 under 10 ms (Zeebe's job push: ~14 ms p50 of
engine overhead per task).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

from confluent_kafka import Consumer, Message, Producer, TopicPartition

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kafka_baseline import create_topics, delete_topics, produce_only, relay  # noqa: E402

from headrace.core.codec import decode_command, decode_event  # noqa: E402
from headrace.core.dsl.load import load_definition  # noqa: E402
from headrace.core.envelope import Command, CommandType, EventType  # noqa: E402
from headrace.core.outbox import command_message  # noqa: E402
from headrace.core.task_codec import (  # noqa: E402
    completed,
    decode_dispatch,
    decode_result,
    encode_result,
    result_target,
    started,
)
from headrace.definitions import deploy  # noqa: E402
from headrace.dev import free_port_block  # noqa: E402
from headrace.settings import Settings  # noqa: E402
from headrace.topic_admin import ensure_task_topics, ensure_topics  # noqa: E402

QUEUE = "bench"


def now_ms() -> int:
    return int(time.time() * 1000)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"p50 {pct(values, 0.5):6.1f} ms   p99 {pct(values, 0.99):6.1f} ms   "
        f"max {max(values):6.1f} ms   (n={len(values):,})"
    )


class Service:
    """``python -m headrace serve <name>`` in a subprocess."""

    def __init__(self, name: str, settings: Settings, workdir: Path) -> None:
        self.name = name
        self.port = free_port_block(1)
        env = {
            **os.environ,
            "HEADRACE_BOOTSTRAP": settings.bootstrap,
            "HEADRACE_TOPIC_PREFIX": settings.topic_prefix,
            "HEADRACE_PARTITIONS": str(settings.partitions),
            "HEADRACE_DATA_DIR": str(workdir / name),
            "HEADRACE_LOG_FORMAT": "text",
            "HEADRACE_LOG_LEVEL": "WARNING",
        }
        self.log_path = workdir / f"{name}.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "headrace", "serve", name, "--web-port", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )

    def metric(self, name: str) -> float:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5)
        except OSError:
            return 0.0
        for line in text.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"{self.name} exited; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


class Worker:
    """Answers every dispatch of the queue with ``started`` and ``completed`` at once.

    It runs in a process of its own (like any worker), and reports when it had
    each dispatch in hand and when its answer was acknowledged.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.received: dict[str, int] = {}  # task id -> wall ms the dispatch was in hand
        self.answered: dict[str, int] = {}  # task id -> wall ms `completed` was acknowledged
        ctx = multiprocessing.get_context("fork")
        self.stopped = ctx.Event()
        self.reports: multiprocessing.Queue[list[tuple[str, int, int]]] = ctx.Queue()
        self.proc = ctx.Process(target=self.run, daemon=True)

    def start(self) -> Worker:
        self.proc.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.proc.join(10)

    def collect(self) -> None:
        """Take in what the worker process has reported so far."""
        while True:
            try:
                batch = self.reports.get(timeout=0.2)
            except queue.Empty:
                return
            for task_id, got, done in batch:
                self.received[task_id] = got
                self.answered[task_id] = done

    def run(self) -> None:
        c = Consumer(
            {
                "bootstrap.servers": self.settings.bootstrap,
                "group.id": f"{self.settings.topic_prefix}workers.{QUEUE}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 1,
                "fetch.min.bytes": 1,
            }
        )
        p = Producer(
            {
                "bootstrap.servers": self.settings.bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 0,
            }
        )
        c.subscribe(self.settings.topics.task_bands(QUEUE))
        while not self.stopped.is_set():
            # consume(n, timeout) waits for n messages or the timeout: poll for the
            # first, then take what else is there without waiting.
            first = c.poll(0.05)
            if first is None:
                continue
            msgs = [m for m in [first, *c.consume(999, 0)] if m.error() is None]
            got = now_ms()
            ids = []
            for m in msgs:
                d = decode_dispatch(m.value())
                if d.kind.value != "dispatch":
                    continue
                topic, key, partition = result_target(d)
                for r in (started(d, "bench", got), completed(d, "bench", got, {"ok": 1})):
                    p.produce(topic, encode_result(r), key, partition=partition)
                ids.append(d.task_id)
            p.flush(30)
            done = now_ms()
            self.reports.put([(task_id, got, done) for task_id in ids])
            c.commit(asynchronous=True)
        c.close()


class Tap:
    """Reads ``events``, ``task-requests``, the dispatch topics, ``task-results`` and
    ``commands`` from the start: when each task passed each hop (record timestamps)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.scheduled: dict[str, dict[str, tuple[int, str]]] = defaultdict(dict)
        self.finished: dict[str, int] = {}
        self.hops: dict[str, dict[str, int]] = defaultdict(dict)  # task id -> hop -> ms
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self) -> Tap:
        self.thread.start()
        return self

    def run(self) -> None:
        c = Consumer(
            {
                "bootstrap.servers": self.settings.bootstrap,
                "group.id": "bench-tasks-tap",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        t = self.settings.topics
        topics = [t.events, t.task_requests, t.task_results, t.commands, *t.task_bands(QUEUE)]
        c.assign(
            [TopicPartition(name, p, 0) for name in topics for p in range(self.settings.partitions)]
        )
        while not self.stopped.is_set():
            for m in c.consume(5000, 0.1):
                if m.error() is None:
                    self.note(m)
        c.close()

    def note(self, m: Message) -> None:
        t = self.settings.topics
        at = m.timestamp()[1]
        topic = m.topic()
        if topic == t.events:
            ev = decode_event(m.value())
            if ev.type is EventType.TaskScheduled:
                self.scheduled[ev.run_id][ev.payload["step"]] = (at, ev.payload["task_id"])
            elif ev.type is EventType.RunCompleted:
                self.finished.setdefault(ev.run_id, at)
        elif topic == t.task_requests:
            self.hops[json.loads(m.value())["task_id"]].setdefault("request", at)
        elif topic == t.task_results:
            r = decode_result(m.value())
            self.hops[r.task_id].setdefault(r.kind.value, at)
        elif topic == t.commands:
            cmd = decode_command(m.value())
            task_id = cmd.payload.get("task_id")
            if isinstance(task_id, str):
                self.hops[task_id].setdefault(cmd.type.value, at)
        else:
            self.hops[m.key().decode()].setdefault("dispatch", at)


def definition(steps: int) -> str:
    lines = [f"type: bench{steps}", "version: 1", "steps:"]
    lines += [
        f"  - {{name: s{i}, kind: task, queue: {QUEUE}, timeouts: {{start_to_close: 60s}}}}"
        for i in range(1, steps + 1)
    ]
    return "\n".join(lines) + "\n"


def start_runs(settings: Settings, workflow: str, ids: list[str], rate: float | None) -> None:
    p = Producer({"bootstrap.servers": settings.bootstrap, "linger.ms": 2, "acks": "all"})
    t0 = time.perf_counter()
    for i, run_id in enumerate(ids):
        payload = {"workflow": workflow, "version": None, "input": {"i": i}}
        cmd = Command(
            f"start-{run_id}", f"t{i % 48}", run_id, CommandType.StartRun, now_ms(), payload
        )
        m = command_message(cmd, settings.routing)
        p.produce(m.topic, m.value, m.key, partition=m.partition)
        p.poll(0)
        if rate:
            wait = t0 + (i + 1) / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
    p.flush(60)


def wait_finished(tap: Tap, ids: list[str], timeout: float, services: list[Service]) -> None:
    deadline = time.monotonic() + timeout
    while any(r not in tap.finished for r in ids):
        for s in services:
            s.check()
        if time.monotonic() > deadline:
            left = sum(1 for r in ids if r not in tap.finished)
            raise SystemExit(f"{left} of {len(ids)} runs did not finish within {timeout:.0f} s")
        time.sleep(0.2)


def latency_phase(
    settings: Settings,
    tap: Tap,
    worker: Worker,
    steps: int,
    rate: float,
    seconds: float,
    services: list[Service],
) -> None:
    n = max(1, int(rate * seconds))
    ids = [f"lat-{i}" for i in range(n)]
    print(f"\nlatency: {n} runs of {steps} steps at {rate:g} runs/s", flush=True)
    start_runs(settings, f"bench{steps}", ids, rate)
    wait_finished(tap, ids, seconds + 120, services)
    worker.collect()
    round_trip, dispatch, answer = [], [], []
    legs: dict[str, list[float]] = defaultdict(list)
    order = ["scheduled", "request", "dispatch", "started", "completed", "CompleteTask", "next"]
    for run_id in ids:
        sched = tap.scheduled[run_id]
        for i in range(1, steps):
            at, task_id = sched[f"s{i}"]
            nxt, _ = sched[f"s{i + 1}"]
            round_trip.append(nxt - at)
            if task_id in worker.received:
                dispatch.append(worker.received[task_id] - at)
            if task_id in worker.answered:
                answer.append(nxt - worker.answered[task_id])
            hops = {"scheduled": at, **tap.hops.get(task_id, {}), "next": nxt}
            for a, b in pairwise(order):
                if a in hops and b in hops:
                    legs[f"{a} -> {b}"].append(hops[b] - hops[a])
    print(f"  round trip (scheduled -> next scheduled)  {spread(round_trip)}")
    print(f"    scheduled -> worker has the dispatch    {spread(dispatch)}")
    print(f"    worker answered -> next scheduled       {spread(answer)}")
    print("  hop by hop (record timestamps):")
    for name, values in legs.items():
        print(f"    {name:<28} {spread(values)}")


def saturation_phase(
    settings: Settings, tap: Tap, steps: int, runs: int, services: list[Service]
) -> float:
    ids = [f"sat-{i}" for i in range(runs)]
    print(f"\nsaturation: {runs:,} runs of {steps} steps started at once", flush=True)
    start_runs(settings, f"bench{steps}", ids, None)
    wait_finished(tap, ids, max(300, runs * steps / 50), services)
    first = min(tap.scheduled[r]["s1"][0] for r in ids)
    last = max(tap.finished[r] for r in ids)
    tasks = runs * steps
    rate = tasks / max(0.001, (last - first) / 1000)
    print(f"  {tasks:,} tasks in {(last - first) / 1000:.1f} s: {rate:,.0f} tasks/s")
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=5, help="task steps per run")
    ap.add_argument("--rate", type=float, default=20.0, help="runs started per second (latency)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the latency phase")
    ap.add_argument("--runs", type=int, default=2000, help="runs of the saturation phase")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--baseline", type=int, default=100_000, help="messages for the L2 relay")
    args = ap.parse_args()
    bootstrap = os.environ.get("HEADRACE_BOOTSTRAP", "127.0.0.1:9092")
    prefix = f"bench-tasks-{uuid.uuid4().hex[:6]}."
    settings = Settings(bootstrap=bootstrap, topic_prefix=prefix, partitions=args.partitions)
    print(
        f"task benchmark: broker {bootstrap}, {args.partitions} partitions, {os.cpu_count()} CPUs",
        flush=True,
    )
    ensure_topics(settings)
    ensure_task_topics(settings, QUEUE)
    text = definition(args.steps)
    deploy(settings, [(load_definition(text, "bench.yaml"), text)])
    workdir = Path(tempfile.mkdtemp(prefix="hr-bench-tasks-"))
    services = [Service(n, settings, workdir) for n in ("orchestrator", "tasks")]
    tap = Tap(settings).start()
    worker = Worker(settings).start()
    try:
        warm = ["warm-0", "warm-1"]
        start_runs(settings, f"bench{args.steps}", warm, None)
        wait_finished(tap, warm, 180, services)
        latency_phase(settings, tap, worker, args.steps, args.rate, args.seconds, services)
        tasks_rate = saturation_phase(settings, tap, args.steps, args.runs, services)
    finally:
        worker.stop()
        tap.stopped.set()
        for s in services:
            s.stop()
    src, dst = f"{prefix}l2-in", f"{prefix}l2-out"
    create_topics(bootstrap, [src, dst], args.partitions)
    produce_only(bootstrap, src, args.baseline, 500, args.partitions)
    l2 = relay("L2 relay", bootstrap, src, dst, args.baseline)
    print(f"\nL2 relay (consume -> produce -> commit): {l2.rate:,.0f} msg/s")
    print(f"saturation / L2: {tasks_rate / l2.rate:.4f} tasks per relayed message")
    delete_topics(bootstrap, prefix)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
