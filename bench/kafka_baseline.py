"""The yardsticks: what Kafka itself does on this machine, before any headrace logic.

Prints messages/s for
  L1p  produce only (confluent-kafka, idempotent, acks=all)
  L1c  consume only (confluent-kafka)
  L2   consume -> produce -> commit relay, at-least-once (offsets committed after the
       batch's produce is acknowledged)
  L2tx the same relay inside Kafka transactions (read_committed, send_offsets_to_transaction)
  L3   the L2 relay plus one rocksdict get + put per message
  L4   the same relay as a faust-streaming agent with a RocksDB table (get + set per message)
and each one's ratio to L2. Every engine benchmark divides by L2 measured in the same run.

    python bench/kafka_baseline.py [--messages 100000] [--size 500] [--partitions 6]

Uses HEADRACE_BOOTSTRAP (default 127.0.0.1:9092); creates throwaway topics.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import rocksdict
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parent


@dataclass
class Result:
    name: str
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    for name, fut in futures.items():
        try:
            fut.result(30)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise SystemExit(f"cannot create topic {name}: {exc}") from exc


def delete_topics(bootstrap: str, prefix: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if names:
        for fut in admin.delete_topics(names).values():
            with contextlib.suppress(KafkaException):
                fut.result(30)


def producer(bootstrap: str, **extra: object) -> Producer:
    conf = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 1_000_000,
        "compression.type": "lz4",
    }
    conf.update(extra)
    return Producer(conf)


def consumer(bootstrap: str, group: str, **extra: object) -> Consumer:
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "fetch.min.bytes": 1,
        "fetch.wait.max.ms": 50,
        "queued.min.messages": 100000,
    }
    conf.update(extra)
    return Consumer(conf)


def produce_only(bootstrap: str, topic: str, n: int, size: int, partitions: int) -> Result:
    p = producer(bootstrap)
    payload = os.urandom(size // 2).hex().encode()[:size]
    keys = [f"tenant-{i % 97}/run-{i}".encode() for i in range(n)]
    t0 = time.perf_counter()
    for i, key in enumerate(keys):
        while True:
            try:
                p.produce(topic, payload, key, partition=i % partitions)
                break
            except BufferError:
                p.poll(0.01)
        if i % 1000 == 0:
            p.poll(0)
    if p.flush(60) != 0:
        raise SystemExit("produce_only: messages left unacknowledged after 60 s")
    return Result("L1p produce", n, time.perf_counter() - t0)


def consume_only(bootstrap: str, topic: str, n: int) -> Result:
    c = consumer(bootstrap, f"bench-c-{uuid.uuid4().hex[:6]}")
    c.subscribe([topic])
    got = 0
    t0 = None
    deadline = time.monotonic() + 120
    while got < n and time.monotonic() < deadline:
        msgs = c.consume(1000, 0.5)
        if msgs and t0 is None:
            t0 = time.perf_counter()
        got += sum(1 for m in msgs if m.error() is None)
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    c.close()
    if got < n:
        raise SystemExit(f"consume_only: got {got} of {n} messages")
    return Result("L1c consume", n, elapsed)


def relay(
    name: str,
    bootstrap: str,
    src: str,
    dst: str,
    n: int,
    *,
    transactional: bool = False,
    db: rocksdict.Rdict | None = None,
) -> Result:
    """Consume src, produce each message to dst, commit offsets per batch."""
    extra: dict[str, object] = {}
    if transactional:
        extra["transactional.id"] = f"bench-tx-{uuid.uuid4().hex[:6]}"
    p = producer(bootstrap, **extra)
    c = consumer(
        bootstrap,
        f"bench-r-{uuid.uuid4().hex[:6]}",
        **({"isolation.level": "read_committed"} if transactional else {}),
    )
    if transactional:
        p.init_transactions(30)
    c.subscribe([src])
    got = 0
    t0 = None
    deadline = time.monotonic() + 300
    while got < n and time.monotonic() < deadline:
        msgs = [m for m in c.consume(2000, 0.5) if m.error() is None]
        if not msgs:
            continue
        if t0 is None:
            t0 = time.perf_counter()
        if transactional:
            p.begin_transaction()
        offsets: dict[tuple[str, int], int] = {}
        for m in msgs:
            value = m.value()
            if db is not None:
                key = m.key()
                db.get(key)
                db[key] = value
            while True:
                try:
                    p.produce(dst, value, m.key(), partition=m.partition())
                    break
                except BufferError:
                    p.poll(0.01)
            offsets[(m.topic(), m.partition())] = m.offset() + 1
        tps = [TopicPartition(t, part, off) for (t, part), off in offsets.items()]
        if transactional:
            p.send_offsets_to_transaction(tps, c.consumer_group_metadata(), 30)
            p.commit_transaction(30)
        else:
            # at-least-once: offsets are committed only once the outputs are acknowledged
            if p.flush(30) != 0:
                raise SystemExit(f"{name}: produce not acknowledged")
            c.commit(offsets=tps, asynchronous=True)
        got += len(msgs)
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    c.close()
    if got < n:
        raise SystemExit(f"{name}: relayed {got} of {n} messages")
    return Result(name, n, elapsed)


def faust_relay(bootstrap: str, src: str, dst: str, n: int, partitions: int) -> Result:
    """Runs bench/_faust_relay.py in a subprocess; it prints the elapsed seconds."""
    datadir = tempfile.mkdtemp(prefix="hr-bench-faust-")
    try:
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        proc = subprocess.run(
            [
                sys.executable,
                str(HERE / "_faust_relay.py"),
                bootstrap,
                src,
                dst,
                str(n),
                datadir,
                str(partitions),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        # faust redirects stdout into its logger, so the line may arrive on either stream
        lines = [
            ln.split("ELAPSED ", 1)[1]
            for ln in (proc.stdout + proc.stderr).splitlines()
            if "ELAPSED " in ln
        ]
        if proc.returncode != 0 or not lines:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise SystemExit(f"L4 faust relay failed (exit {proc.returncode}):\n{tail}")
        return Result("L4 faust+rocksdb", n, float(lines[-1].split()[0]))
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=500)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--skip-faust", action="store_true")
    args = ap.parse_args()
    bootstrap = os.environ.get("HEADRACE_BOOTSTRAP", "127.0.0.1:9092")
    run = uuid.uuid4().hex[:6]
    prefix = f"bench-{run}-"
    src, out2, out2tx, out3, out4 = (prefix + s for s in ("in", "l2", "l2tx", "l3", "l4"))
    create_topics(bootstrap, [src, out2, out2tx, out3, out4], args.partitions)
    n = args.messages
    print(
        f"kafka baseline: {n} messages of {args.size} B, {args.partitions} partitions, "
        f"broker {bootstrap}",
        flush=True,
    )
    results: list[Result] = []
    try:

        def step(r: Result) -> None:
            results.append(r)
            print(f"  {r.name:<18} {r.rate:>10,.0f} msg/s  ({r.seconds:.2f} s)", flush=True)

        step(produce_only(bootstrap, src, n, args.size, args.partitions))
        step(consume_only(bootstrap, src, n))
        step(relay("L2 relay", bootstrap, src, out2, n))
        step(relay("L2tx relay+tx", bootstrap, src, out2tx, n, transactional=True))
        dbdir = tempfile.mkdtemp(prefix="hr-bench-rocks-")
        try:
            db = rocksdict.Rdict(dbdir)
            step(relay("L3 relay+rocksdb", bootstrap, src, out3, n, db=db))
            db.close()
        finally:
            shutil.rmtree(dbdir, ignore_errors=True)
        if not args.skip_faust:
            step(faust_relay(bootstrap, src, out4, n, args.partitions))
    finally:
        delete_topics(bootstrap, prefix)
    l2 = next(r.rate for r in results if r.name.startswith("L2 "))
    print("\nratio to L2 (consume->produce->commit relay):")
    for r in results:
        print(f"  {r.name:<18} {r.rate / l2:>6.2f}x")


if __name__ == "__main__":
    main()
