"""A tiny faust app for tests/streams/test_batches.py (run as a subprocess).

    batch_app.py BOOTSTRAP TOPIC APP_ID DATADIR plain|safe

Its batch processing raises on a message whose value is ``boom``; ``plain``
uses ``take_events`` as faust documents it, ``safe`` uses ``run_batches``.
"""

from __future__ import annotations

import logging
import sys

import faust

from headrace.streams.batches import run_batches

bootstrap, topic_name, app_id, datadir, mode = sys.argv[1:6]
app = faust.App(
    app_id,
    broker=f"kafka://{bootstrap}",
    datadir=datadir,
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
    broker_commit_interval=0.2,
    topic_partitions=1,
)
topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw", partitions=1)
# Like every headrace service, the app has a table. (faust 0.15 sometimes never
# resumes the streams of an app without tables after its first assignment.)
table = app.Table("seen", key_type=bytes, value_type=bytes, partitions=1)


async def process(batch: list) -> None:
    for ev in batch:
        if ev.value == b"boom":
            raise RuntimeError("processing failed")


@app.agent(topic, concurrency=1)
async def agent(stream: faust.StreamT) -> None:
    if mode == "safe":
        await run_batches(stream, process, size=10, within=0.05)
    else:
        async for batch in stream.take_events(10, within=0.05):
            await process(batch)


if __name__ == "__main__":
    faust.Worker(app, loglevel=logging.WARNING, redirect_stdouts=False).execute_from_commandline()
