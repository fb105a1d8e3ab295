"""L4 of bench/kafka_baseline.py: a faust agent relaying src -> dst with a RocksDB table.

Run by kafka_baseline.py in a subprocess:
    _faust_relay.py BOOTSTRAP SRC DST N DATADIR PARTITIONS
Prints ``ELAPSED <seconds>`` from the first message to the N-th, then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
import uuid

import faust
from mode import Worker

bootstrap, src, dst, n_text, datadir, partitions_text = sys.argv[1:7]
N = int(n_text)
app = faust.App(
    f"bench-l4-{uuid.uuid4().hex[:6]}",
    broker=f"kafka://{bootstrap}",
    store="rocksdb://",
    datadir=datadir,
    topic_partitions=int(partitions_text),
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    table_standby_replicas=0,
    producer_acks=-1,
    producer_linger_ms=5,
    stream_buffer_maxsize=4096,
)
source = app.topic(src, key_serializer="raw", value_serializer="raw")
sink = app.topic(dst, key_serializer="raw", value_serializer="raw")
table = app.Table("relay", key_type=bytes, value_type=bytes, partitions=int(partitions_text))
table.key_serializer = "raw"
table.value_serializer = "raw"

state = {"count": 0, "t0": 0.0}


@app.agent(source, concurrency=1)
async def relay(stream: faust.StreamT) -> None:
    async for event in stream.events():
        if state["count"] == 0:
            state["t0"] = time.perf_counter()
        key, value = event.key, event.value
        table.get(key)
        table[key] = value
        await sink.send(key=key, value=value, partition=event.message.partition)
        state["count"] += 1
        if state["count"] == N:
            await app.producer.flush()
            print(f"ELAPSED {time.perf_counter() - state['t0']:.4f}", flush=True)
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(worker.stop()))


worker = Worker(app, loglevel=logging.WARNING, quiet=True)

if __name__ == "__main__":
    with contextlib.suppress(SystemExit):
        worker.execute_from_commandline()
