"""A task worker written from docs/tasks.md alone: confluent-kafka and fastavro, no headrace.

It proves the task protocol is language-neutral: it imports nothing from
``headrace`` — it reads the two ``.avsc`` files, frames and unframes Avro
single-object encoding itself, and answers on the key and partition each
dispatch names. Run it as a process (``python raw_worker.py ...``) so a test
can ``kill -9`` it.

Behaviour is scripted by the task input (so one worker serves every test):

* ``{"fail": [{"code", "message", "retryable"}, ...]}`` — attempt n fails with
  entry n-1 while there is one, then succeeds (``"healthy_worker": NAME``:
  except on the worker named NAME, which always succeeds);
* ``{"slow_worker": NAME, "work_ms": N}`` — the worker named NAME works N ms
  (heartbeating if the dispatch asks for heartbeats) before it completes;
  every other worker completes at once;
* ``{"ghost": true}`` (or a list of attempt numbers) — the worker says
  ``started`` and then never answers (that attempt);
* otherwise it completes with ``{"echo": input, "attempt": n, "worker": name}``.

Every delivery is appended to the ledger (JSON lines): ``{"event": "delivery",
task_id, attempt, idempotency_key, worker, topic}`` once ``started`` is
acknowledged, and ``{"event": "answered", ...}`` after the final result.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas" / "avro"
MAGIC = b"\xc3\x01"
BANDS = ("p9", "p8", "p7", "p6")


def without_logical(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_logical(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [without_logical(v) for v in node]
    return node


def load_plain(name: str) -> tuple[Any, bytes]:
    """The schema without logical types (times stay epoch ms) and its wire fingerprint."""
    source = json.loads((SCHEMAS / name).read_text())
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(source), "CRC-64-AVRO"))
    return parse_schema(without_logical(source)), fp


DISPATCH, DISPATCH_FP = load_plain("task_dispatch.avsc")
RESULT, RESULT_FP = load_plain("task_result.avsc")


def decode_dispatch(raw: bytes) -> dict[str, Any]:
    if raw[:2] != MAGIC or raw[2:10] != DISPATCH_FP:
        raise ValueError(f"not a TaskDispatch: header {raw[:10].hex()}")
    record: dict[str, Any] = schemaless_reader(io.BytesIO(raw[10:]), DISPATCH, None)
    return record


def encode_result(record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    out.write(MAGIC + RESULT_FP)
    schemaless_writer(out, RESULT, record)
    return out.getvalue()


class RawWorker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.name = args.name
        self.ledger = Path(args.ledger)
        base = f"{args.prefix}tasks.{args.queue}"
        self.topics = [f"{base}.{band}" for band in BANDS] + [base]
        self.band = {t: i for i, t in enumerate(self.topics)}
        self.consumer = Consumer(
            {
                "bootstrap.servers": args.bootstrap,
                "group.id": f"{args.prefix}workers.{args.queue}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 500,
                "fetch.wait.max.ms": 10,
                "topic.metadata.refresh.interval.ms": 1000,
            }
        )
        self.producer = Producer(
            {"bootstrap.servers": args.bootstrap, "acks": "all", "linger.ms": 1}
        )
        self.stop = False

    def note(self, event: str, d: dict[str, Any], topic: str) -> None:
        line = {
            "event": event,
            "task_id": d["task_id"],
            "attempt": d["attempt"],
            "idempotency_key": d["idempotency_key"],
            "worker": self.name,
            "topic": topic,
        }
        with self.ledger.open("a") as f:
            f.write(json.dumps(line) + "\n")

    def answer(self, d: dict[str, Any], kind: str, **fields: Any) -> None:
        record = {
            "task_id": d["task_id"],
            "attempt": d["attempt"],
            "kind": kind,
            "worker": self.name,
            "time": int(time.time() * 1000),
            "output": None,
            "error": None,
            "progress": None,
            "traceparent": None,
            **fields,
        }
        self.producer.produce(
            d["result_topic"],
            encode_result(record),
            key=d["result_key"].encode(),
            partition=d["result_partition"],
        )
        if self.producer.flush(30) != 0:
            raise RuntimeError("results not acknowledged")

    def handle(self, d: dict[str, Any], topic: str) -> None:
        if d["kind"] == "cancel":
            return
        task_input = json.loads(d["input"])
        self.answer(d, "started")
        self.note("delivery", d, topic)
        script = task_input if isinstance(task_input, dict) else {}
        ghost = script.get("ghost")
        if ghost is True or (isinstance(ghost, list) and d["attempt"] in ghost):
            return
        if script.get("slow_worker") == self.name:
            self.work(d, int(script.get("work_ms", 60_000)))
        failures = [] if script.get("healthy_worker") == self.name else script.get("fail") or []
        if d["attempt"] <= len(failures):
            f = failures[d["attempt"] - 1]
            error = {
                "code": f["code"],
                "message": f.get("message", "scripted failure"),
                "retryable": f.get("retryable", True),
                "details": json.dumps(f["details"]) if "details" in f else None,
            }
            self.answer(d, "failed", error=error)
        else:
            output = {"echo": task_input, "attempt": d["attempt"], "worker": self.name}
            self.answer(d, "completed", output=json.dumps(output))
        self.note("answered", d, topic)

    def work(self, d: dict[str, Any], ms: int) -> None:
        beat = d["heartbeat_ms"]
        step = beat / 3000 if beat is not None else 0.05
        end = time.monotonic() + ms / 1000
        while not self.stop and (left := end - time.monotonic()) > 0:
            if beat is not None:
                self.answer(d, "heartbeat", progress=json.dumps({"left_ms": int(left * 1000)}))
            time.sleep(min(step, left))

    def run(self) -> None:
        self.consumer.subscribe(self.topics)
        while not self.stop:
            # consume(n, timeout) waits for n messages or the timeout: poll for the
            # first, then take what else is there without waiting.
            first = self.consumer.poll(0.1)
            if first is None:
                continue
            batch = [first, *self.consumer.consume(99, 0)]
            msgs = [m for m in batch if m.error() is None]
            # docs/tasks.md: higher priority bands first
            msgs.sort(key=lambda m: self.band.get(m.topic(), len(self.topics)))
            for m in msgs:
                self.handle(decode_dispatch(m.value()), m.topic())
            if msgs:
                self.consumer.commit(asynchronous=False)
        self.consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--name", default=f"raw-{os.getpid()}")
    parser.add_argument("--ledger", required=True)
    worker = RawWorker(parser.parse_args())

    def stop(*_: Any) -> None:
        worker.stop = True

    signal.signal(signal.SIGTERM, stop)
    worker.run()
    sys.exit(0)


if __name__ == "__main__":
    main()
