"""Engine benchmark: workflow steps per second through the real platform.

Runs a 1-step and a 10-step sequential workflow of instant tasks (answered by
the task responder stand-in, headrace/services/responder.py), started through
``ingress`` as CloudEvents, with the ingress router and the orchestrator as
separate processes on the broker at HEADRACE_BOOTSTRAP. Prints

  * completed workflow steps/s at saturation, per workflow;
  * per-step latency p50/p99 at half that load (10-step workflow): the time from
    one step's TaskScheduled to the next one's (or to RunCompleted), from the
    events' Kafka timestamps;
  * CPU seconds per step of the headrace processes (orchestrator, router, responder);
  * Kafka messages per step, and steps/s x messages per step / the L2 relay
    (consume -> produce -> commit) measured in the same run by bench/kafka_baseline.py.

    python bench/engine.py [--runs1 6000] [--runs10 600] [--latency-seconds 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))
import itertools

import kafka_baseline as baseline

from headrace.core.dsl.load import load_definition
from headrace.definitions import deploy
from headrace.kafka import make_admin, make_producer
from headrace.settings import Settings
from headrace.streams.cloudevents_in import encode_event
from headrace.topic_admin import ensure_topics

START = "io.headrace.run.start"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def workflow(steps: int) -> str:
    body = "\n".join(
        f"  - {{name: s{i}, kind: task, queue: work, timeouts: {{start_to_close: 60s}}}}"
        for i in range(1, steps + 1)
    )
    return f"type: bench{steps}\nversion: 1\nsteps:\n{body}\n"


class Services:
    """The headrace processes under test, each with its own log and data dir."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.env = {
            **os.environ,
            "HEADRACE_BOOTSTRAP": settings.bootstrap,
            "HEADRACE_TOPIC_PREFIX": settings.topic_prefix,
            "HEADRACE_HOME": str(workdir / "home"),
            "HEADRACE_DATA_DIR": str(workdir / "data"),
            "HEADRACE_LOG_FORMAT": "text",
            "HEADRACE_LOG_LEVEL": "WARNING",
        }
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *argv: str) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT, env=self.env
        )

    def cpu_seconds(self) -> float:
        total = 0
        for p in self.procs.values():
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / CLK_TCK

    def stop(self) -> None:
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


class EventsTap:
    """Follows the events topic from its current end; counts and timestamps events."""

    def __init__(self, settings: Settings) -> None:
        self.c = Consumer(
            {
                "bootstrap.servers": settings.bootstrap,
                "group.id": f"bench-tap-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        tps = [TopicPartition(settings.topics.events, p) for p in range(settings.partitions)]
        for tp in tps:
            tp.offset = self.c.get_watermark_offsets(tp, cached=False)[1]
        self.c.assign(tps)
        self.completed = 0
        # run key -> [(timestamp ms, event type)]
        self.timeline: dict[bytes, list[tuple[int, bytes]]] = defaultdict(list)
        self.keep_timeline = False

    def drain(self, timeout: float = 0.2) -> None:
        for m in self.c.consume(5000, timeout):
            if m.error() is not None:
                continue
            kind = dict(m.headers() or []).get("headrace-event-type", b"")
            if kind == b"RunCompleted":
                self.completed += 1
            if self.keep_timeline and kind in (b"TaskScheduled", b"RunCompleted"):
                self.timeline[m.key() or b""].append((m.timestamp()[1], kind))

    def wait_completed(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.completed < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {self.completed} of {n} runs completed in {timeout:.0f}s")
            self.drain()


def end_offsets(settings: Settings, topics: list[str]) -> int:
    c = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": "bench-offsets"})
    total = 0
    try:
        for t in topics:
            meta = c.list_topics(t, timeout=10).topics.get(t)
            for p in meta.partitions if meta else {}:
                total += c.get_watermark_offsets(TopicPartition(t, p), cached=False)[1]
    finally:
        c.close()
    return total


def start_runs(settings: Settings, wtype: str, n: int, rate: float | None = None) -> None:
    producer = make_producer(settings, "bench-starter")
    began = time.perf_counter()
    for i in range(n):
        ev = encode_event(
            START, "bench", {"workflow": wtype, "input": {"i": i}}, tenant=f"t{i % 64}"
        )
        producer.produce(settings.topics.ingress, ev.value, ev.key, headers=ev.headers)
        if rate:
            ahead = (i + 1) / rate - (time.perf_counter() - began)
            if ahead > 0:
                producer.poll(ahead)
        elif i % 1000 == 0:
            producer.poll(0)
    producer.flush(30)


def saturation(settings: Settings, services: Services, tap: EventsTap, steps: int, runs: int):
    topics = settings.topics
    counted = [
        topics.ingress,
        topics.commands,
        topics.events,
        topics.task_requests,
        f"{topics.prefix}orchestrator-runs-changelog",
    ]
    msgs0 = end_offsets(settings, counted)
    cpu0 = services.cpu_seconds()
    done0 = tap.completed
    t0 = time.perf_counter()
    start_runs(settings, f"bench{steps}", runs)
    tap.wait_completed(done0 + runs, 600)
    elapsed = time.perf_counter() - t0
    cpu = services.cpu_seconds() - cpu0
    msgs = end_offsets(settings, counted) - msgs0
    total_steps = runs * steps
    return total_steps / elapsed, cpu / total_steps, msgs / total_steps, elapsed


def latency(settings: Settings, tap: EventsTap, steps: int, rate_runs: float, seconds: float):
    tap.timeline.clear()
    tap.keep_timeline = True
    n = max(1, int(rate_runs * seconds))
    done0 = tap.completed
    start_runs(settings, f"bench{steps}", n, rate=rate_runs)
    tap.wait_completed(done0 + n, 300)
    tap.keep_timeline = False
    gaps: list[int] = []
    for entries in tap.timeline.values():
        entries.sort()
        gaps += [b[0] - a[0] for a, b in itertools.pairwise(entries)]
    return gaps


def pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs1", type=int, default=6000)
    ap.add_argument("--runs10", type=int, default=600)
    ap.add_argument("--latency-seconds", type=float, default=15.0)
    ap.add_argument("--baseline-messages", type=int, default=100_000)
    args = ap.parse_args()
    bootstrap = os.environ.get("HEADRACE_BOOTSTRAP", "127.0.0.1:9092")

    # L2, the yardstick, on this broker in this run
    prefix = f"bench-{uuid.uuid4().hex[:6]}-"
    src, dst = prefix + "in", prefix + "l2"
    baseline.create_topics(bootstrap, [src, dst], 6)
    baseline.produce_only(bootstrap, src, args.baseline_messages, 500, 6)
    l2 = baseline.relay("L2 relay", bootstrap, src, dst, args.baseline_messages).rate
    baseline.delete_topics(bootstrap, prefix)
    print(f"L2 relay (consume->produce->commit, 500 B): {l2:,.0f} msg/s", flush=True)

    settings = Settings(bootstrap=bootstrap, topic_prefix=f"be{uuid.uuid4().hex[:6]}.")
    ensure_topics(settings)
    for steps in (1, 10):
        text = workflow(steps)
        deploy(settings, [(load_definition(text, f"bench{steps}.yaml"), text)])
    workdir = Path(tempfile.mkdtemp(prefix="hr-bench-engine-"))
    services = Services(settings, workdir)
    services.start("orchestrator", "-m", "headrace", "serve", "orchestrator", "--web-port", "0")
    services.start("router", "-m", "headrace", "serve", "router", "--web-port", "0")
    services.start("responder", "-m", "headrace.services.responder")
    tap = EventsTap(settings)
    try:
        start_runs(settings, "bench1", 50)  # warm up: every process joined and ready
        tap.wait_completed(50, 180)
        print(f"platform up (logs in {workdir})\n", flush=True)
        results = {}
        for steps, runs in ((1, args.runs1), (10, args.runs10)):
            rate, cpu, msgs, elapsed = saturation(settings, services, tap, steps, runs)
            results[steps] = rate
            print(
                f"{steps:>2}-step workflow: {runs} runs in {elapsed:5.1f}s  "
                f"{rate:8,.0f} steps/s  {cpu * 1e3:6.2f} ms CPU/step  "
                f"{msgs:5.1f} Kafka msgs/step  "
                f"(steps/s x msgs/step) / L2 = {rate * msgs / l2:5.2f}",
                flush=True,
            )
        print()
        for share, label in ((0.5, "half load"), (0.05, "light load")):
            rate = results[10] * share / 10  # runs/s giving that share of the saturated rate
            gaps = latency(settings, tap, 10, rate, args.latency_seconds)
            print(
                f"per-step latency at {label} ({rate * 10:,.0f} steps/s, 10-step workflow, "
                f"{len(gaps)} steps): p50 {pct(gaps, 50):.1f} ms  p99 {pct(gaps, 99):.1f} ms  "
                f"max {max(gaps) if gaps else float('nan'):.0f} ms",
                flush=True,
            )
    finally:
        services.stop()
        admin = make_admin(settings)
        names = [
            t for t in admin.list_topics(timeout=10).topics if t.startswith(settings.topic_prefix)
        ]
        if names:
            admin.delete_topics(names)


if __name__ == "__main__":
    main()
