"""The timer service under load: schedule rate, firing lateness, storms, RSS and disk.

Runs ``headrace serve timers`` as a subprocess against HEADRACE_BOOTSTRAP
(default 127.0.0.1:9092) on throwaway topics, and measures

  baseline   the raw confluent-kafka produce rate of the same arm messages
             (bench/kafka_baseline.py's producer), measured in the same run;
  spread     --timers timers due evenly over --spread seconds, starting --lead
             seconds after the run begins: schedule rate (arms persisted by the
             service per second, from the first produce to the last arm), and
             lateness (fire record timestamp - due) p50/p99/max, separately for
             timers that fell due while arming was still going on;
  storm      --storm timers all due within one second: how long after that
             second the last one fired, the firing rate, lateness;
and the service's peak RSS and data directory size after each phase.

    python bench/timers.py [--timers 1000000] [--storm 100000] [--spread 600]

Goals (issue 6): schedule >= 20,000 timers/s; a 100,000-timer storm fully
fired within 10 s of its due time; p99 lateness < 100 ms outside storms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kafka_baseline import create_topics, delete_topics, producer  # noqa: E402

from headrace.core.decider.effects import ArmTimer  # noqa: E402
from headrace.core.outbox import Outgoing, batch_timer_ops, messages_for  # noqa: E402
from headrace.dev import free_port_block  # noqa: E402
from headrace.settings import Settings  # noqa: E402
from headrace.topic_admin import ensure_topics  # noqa: E402

TENANTS = 240


def now_ms() -> int:
    return int(time.time() * 1000)


def arm_message(settings: Settings, phase: str, i: int, due: int) -> Outgoing:
    run = f"{phase}{i}"
    return messages_for(
        [ArmTimer(f"{run}:1", f"t{i % TENANTS}", run, "wait", due, None)], settings.routing
    )[0]


BATCH = 100  # arm operations per Kafka message, as the orchestrator groups them (--batch)


def arms(settings: Settings, phase: str, n: int, due: Callable[[int], int]) -> Iterable[Outgoing]:
    """n arm operations, grouped per partition into messages of up to BATCH operations."""
    chunk: list[Outgoing] = []
    for i in range(n):
        chunk.append(arm_message(settings, phase, i, due(i)))
        if len(chunk) >= BATCH * settings.partitions:
            yield from batch_timer_ops(chunk, settings.routing) if BATCH > 1 else chunk
            chunk = []
    if chunk:
        yield from batch_timer_ops(chunk, settings.routing) if BATCH > 1 else chunk


def produce_all(p: Producer, messages: Iterable[Outgoing]) -> int:
    n = 0
    for m in messages:
        while True:
            try:
                p.produce(m.topic, m.value, m.key, partition=m.partition, headers=m.headers)
                break
            except BufferError:
                p.poll(0.01)
        n += 1
        if n % 2000 == 0:
            p.poll(0)
    if p.flush(120) != 0:
        raise SystemExit("arm messages left unacknowledged after 120 s")
    return n


MISSING = -(2**31)


@dataclass
class Phase:
    """Firings of one phase, collected by the tap: lateness (ms) by timer index."""

    name: str
    count: int
    due: Callable[[int], int]
    late: array = field(default_factory=lambda: array("i"))
    fired: int = 0
    duplicates: int = 0
    last_fire: int = 0

    def __post_init__(self) -> None:
        self.late = array("i", [MISSING]) * self.count

    def lateness(self, lo: int = 0, hi: int | None = None) -> array:
        return array("i", (v for v in self.late[lo:hi] if v != MISSING))


class Tap:
    """Reads ``commands`` and files each firing under its phase (by run id prefix)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.phases: dict[str, Phase] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Tap:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        c = Consumer(
            {
                "bootstrap.servers": self.settings.bootstrap,
                "group.id": "bench-timers-tap",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "queued.min.messages": 200000,
            }
        )
        topic = self.settings.topics.commands
        c.assign([TopicPartition(topic, p, 0) for p in range(self.settings.partitions)])
        while not self._stop.is_set():
            for m in c.consume(5000, 0.2):
                if m.error() is not None:
                    continue
                run = m.key().split(b"/", 1)[1].decode()
                phase = self.phases.get(run[0])
                if phase is None:
                    continue
                i = int(run[1:])
                at = m.timestamp()[1]
                if phase.late[i] != MISSING:
                    phase.duplicates += 1
                    continue
                phase.late[i] = at - phase.due(i)
                phase.fired += 1
                phase.last_fire = max(phase.last_fire, at)
        c.close()


class Service:
    """``python -m headrace serve timers`` in a subprocess with its own data dir."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.port = free_port_block(1)
        self.workdir = workdir
        self.data = workdir / "data"
        env = {
            **os.environ,
            "HEADRACE_BOOTSTRAP": settings.bootstrap,
            "HEADRACE_TOPIC_PREFIX": settings.topic_prefix,
            "HEADRACE_PARTITIONS": str(settings.partitions),
            "HEADRACE_DATA_DIR": str(self.data),
            "HEADRACE_LOG_FORMAT": "text",
            "HEADRACE_LOG_LEVEL": "WARNING",
        }
        self.log = (workdir / "timers.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "headrace", "serve", "timers", "--web-port", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )

    def metric(self, name: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10).read()
        for line in text.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def wait(self, name: str, value: float, timeout: float) -> float:
        """Poll a metric until it reaches ``value``; returns when (perf_counter)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"the timer service exited; see {self.workdir / 'timers.log'}")
            try:
                if self.metric(name) >= value:
                    return time.perf_counter()
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} did not reach {value} within {timeout:.0f} s")
            time.sleep(0.1)

    def rss_mb(self) -> tuple[float, float]:
        """(current, peak) resident memory in MiB."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            fields[k] = v.strip()
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def disk_mb(self) -> float:
        total = sum(f.stat().st_size for f in self.data.rglob("*") if f.is_file())
        return total / 2**20

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def pct(values: array, q: float) -> float:
    s = sorted(values)
    return float(s[min(len(s) - 1, int(q * len(s)))]) if s else float("nan")


def lateness(values: array) -> str:
    if not values:
        return "n/a"
    return (
        f"p50 {pct(values, 0.5):.0f} ms, p99 {pct(values, 0.99):.0f} ms, "
        f"max {max(values)} ms (n={len(values):,})"
    )


def baseline(settings: Settings, prefix: str, n: int) -> float:
    topic = f"{prefix}baseline"
    create_topics(settings.bootstrap, [topic], settings.partitions)
    due = now_ms() + 3_600_000
    msgs = [
        Outgoing(topic, m.value, m.key, m.partition, m.headers)
        for m in (arm_message(settings, "x", i, due) for i in range(n))
    ]
    p = producer(settings.bootstrap)
    t0 = time.perf_counter()
    produce_all(p, msgs)
    return n / (time.perf_counter() - t0)


def spread_phase(
    settings: Settings, svc: Service, tap: Tap, n: int, spread: int, lead: int
) -> float:
    start = now_ms() + lead * 1000
    step = spread * 1000 / n
    phase = Phase("spread", n, lambda i: start + int(i * step))
    tap.phases["a"] = phase
    p = producer(settings.bootstrap)
    print(f"\nspread: {n:,} timers due over {spread} s from {lead} s after now", flush=True)
    t0 = time.perf_counter()
    produce_all(p, arms(settings, "a", n, lambda i: start + int(i * step)))
    produced = time.perf_counter() - t0
    armed_at = svc.wait("headrace_timers_armed_total", n, max(600, n / 500))
    armed_ms = now_ms()
    arm_s = armed_at - t0
    print(f"  produced in {produced:.1f} s ({n / produced:,.0f}/s); armed in {arm_s:.1f} s")
    print(f"  schedule rate  {n / arm_s:>10,.0f} timers/s")
    rss, peak = svc.rss_mb()
    print(
        f"  with all armed: RSS {rss:.0f} MiB (peak {peak:.0f}), data dir {svc.disk_mb():.0f} MiB"
    )
    last_due = start + spread * 1000
    deadline = time.monotonic() + max(0, (last_due - now_ms()) / 1000) + 300
    while phase.fired < n and time.monotonic() < deadline:
        time.sleep(1)
    split = max(0, min(n, int((armed_ms - start) / step) + 1)) if armed_ms > start else 0
    print(f"  fired {phase.fired:,} of {n:,}, {phase.duplicates} duplicates")
    print(f"  lateness, all             {lateness(phase.lateness())}")
    if split:
        print(
            f"  lateness, due while arming ({split:,} timers) {lateness(phase.lateness(0, split))}"
        )
    print(f"  lateness, due after arming {lateness(phase.lateness(split))}")
    rss, peak = svc.rss_mb()
    print(f"  after firing: RSS {rss:.0f} MiB (peak {peak:.0f}), data dir {svc.disk_mb():.0f} MiB")
    return n / arm_s


def storm_phase(settings: Settings, svc: Service, tap: Tap, n: int, arm_rate: float) -> None:
    lead = max(20.0, n / max(arm_rate, 1) * 1.5 + 10)
    at = now_ms() + int(lead * 1000)
    at -= at % 1000
    phase = Phase("storm", n, lambda i: at + (i % 1000))
    tap.phases["s"] = phase
    p = producer(settings.bootstrap)
    print(f"\nstorm: {n:,} timers due within one second, {lead:.0f} s from now", flush=True)
    armed_before = svc.metric("headrace_timers_armed_total")
    produce_all(p, arms(settings, "s", n, lambda i: at + (i % 1000)))
    svc.wait("headrace_timers_armed_total", armed_before + n, max(600, n / 500))
    if now_ms() > at:
        print(f"  note: arming finished {(now_ms() - at) / 1000:.1f} s after the storm was due")
    deadline = time.monotonic() + lead + 600
    while phase.fired < n and time.monotonic() < deadline:
        time.sleep(0.5)
    done = phase.last_fire - (at + 1000)
    print(f"  fired {phase.fired:,} of {n:,}, {phase.duplicates} duplicates")
    print(
        f"  fully fired {done / 1000:.2f} s after its due second "
        f"({n / max(0.001, (phase.last_fire - at) / 1000):,.0f} timers/s)"
    )
    print(f"  lateness                  {lateness(phase.lateness())}")
    rss, peak = svc.rss_mb()
    print(f"  RSS {rss:.0f} MiB (peak {peak:.0f}), data dir {svc.disk_mb():.0f} MiB")


def main() -> None:
    global BATCH
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--timers", type=int, default=1_000_000, help="timers in the spread phase")
    ap.add_argument("--storm", type=int, default=100_000, help="timers in the storm phase")
    ap.add_argument("--spread", type=int, default=600, help="seconds the spread timers span")
    ap.add_argument("--lead", type=int, default=60, help="seconds before the first spread timer")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--baseline", type=int, default=100_000, help="messages for the baseline")
    ap.add_argument("--keep", action="store_true", help="keep topics and data for inspection")
    ap.add_argument(
        "--batch",
        type=int,
        default=100,
        help="arm operations per Kafka message (the orchestrator groups a batch's timer "
        "operations per partition); 1 sends one message per timer",
    )
    args = ap.parse_args()
    BATCH = max(1, args.batch)
    bootstrap = os.environ.get("HEADRACE_BOOTSTRAP", "127.0.0.1:9092")
    prefix = f"bench-timers-{uuid.uuid4().hex[:6]}."
    settings = Settings(bootstrap=bootstrap, topic_prefix=prefix, partitions=args.partitions)
    ensure_topics(settings)
    workdir = Path(tempfile.mkdtemp(prefix="hr-bench-timers-"))
    print(
        f"timer service benchmark: broker {bootstrap}, {args.partitions} partitions, "
        f"{os.cpu_count()} CPUs, {BATCH} arm operations per message",
        flush=True,
    )
    rate = baseline(settings, prefix, args.baseline)
    print(f"baseline: raw produce of the same arm messages {rate:>10,.0f} msg/s", flush=True)
    svc = Service(settings, workdir)
    tap = Tap(settings).start()
    try:
        svc.wait("headrace_timers_active_partitions", args.partitions, 120)
        arm_rate = 5000.0
        if args.timers:
            arm_rate = spread_phase(settings, svc, tap, args.timers, args.spread, args.lead)
        if args.storm:
            storm_phase(settings, svc, tap, args.storm, arm_rate)
    finally:
        tap.stop()
        svc.stop()
        if not args.keep:
            delete_topics(bootstrap, prefix)
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir} and topics {prefix}*")


if __name__ == "__main__":
    main()
