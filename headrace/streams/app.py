"""The faust application every headrace stream processor runs in.

One place turns :class:`~headrace.settings.Settings` into a ``faust.App`` with
the settings the delivery contract needs (DESIGN.md, "the log is the truth"):

* at-least-once processing — faust's exactly-once mode has open duplicate and
  loss bugs (faust #323, #517); we dedupe by command id instead;
* ``consumer_auto_offset_reset='earliest'`` — ``latest`` can hang recovery
  while changelog segments are deleted (faust #651);
* RocksDB through rocksdict with a modest block cache — faust's default is a
  2 GiB cache *per partition database*;
* the worker's own data directory — RocksDB takes a lock per process;
* a 10 s session timeout and static group membership, so a crashed worker's
  partitions move (or come back to it on restart) in seconds, not a minute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust

from headrace.settings import Settings

# faust builds its aiokafka consumer with fetch_max_wait_ms=1500 (hard-coded in
# faust/transport/drivers/aiokafka.py). aiokafka keeps one fetch in flight per
# broker and leaves partitions that still hold unconsumed records out of it, so
# new data on such a partition waits for that long poll to end: up to 1.5 s,
# in practice until data arrives on some other partition. A short long-poll
# bounds that wait (docs/internals.md, bench/tasks.py hop latencies).
FETCH_MAX_WAIT_MS = 10


def _short_fetch_wait() -> None:
    from faust.transport.drivers import aiokafka as driver

    thread = driver.AIOKafkaConsumerThread
    if getattr(thread, "_headrace_fetch_wait", False):
        return
    create = thread._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts
        return consumer

    thread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    thread._headrace_fetch_wait = True  # type: ignore[attr-defined]


_short_fetch_wait()

ROCKSDB_OPTIONS: dict[str, Any] = {
    "block_cache_size": 32 * 1024 * 1024,
    "block_cache_compressed_size": 0,
    "max_open_files": 512,
    "write_buffer_size": 16 * 1024 * 1024,
}


def broker_urls(bootstrap: str) -> list[str]:
    """faust wants ``kafka://host:port`` URLs, one per bootstrap server."""
    return [f"kafka://{b.strip()}" for b in bootstrap.split(",") if b.strip()]


def data_dir(settings: Settings, role: str, instance: str) -> Path:
    """Where this worker's RocksDB lives; unique per role and instance."""
    base = settings.data_dir or (settings.home / "data")
    path = Path(base) / f"{role}-{instance}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_app(
    settings: Settings,
    role: str,
    *,
    instance: str = "0",
    web_port: int | None = None,
    **overrides: Any,
) -> faust.App:
    """A faust App for ``role`` (its consumer group is ``<prefix><role>``)."""
    conf: dict[str, Any] = {
        "broker": broker_urls(settings.bootstrap),
        "store": "rocksdb://",
        "datadir": str(data_dir(settings, role, instance)),
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "consumer_auto_offset_reset": "earliest",
        "processing_guarantee": "at_least_once",
        "producer_acks": -1,
        "producer_linger_ms": 2,
        "broker_commit_interval": 1.0,
        "stream_buffer_maxsize": 8192,
        "table_standby_replicas": 1,
        "table_key_index_size": 100_000,
        "web_enabled": web_port is not None,
        "web_port": web_port or 6066,
        "web_host": settings.web_host,
        "worker_redirect_stdouts": False,
        # A dead worker's partitions move after the session timeout; faust's
        # default (60 s) would stall its runs for a minute after a crash.
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 1.0,
        # Static membership (KIP-345): a worker restarted under the same
        # instance name gets its partitions back without a group rebalance.
        "consumer_group_instance_id": f"{settings.topic_prefix}{role}-{instance}",
    }
    conf.update(overrides)
    app = faust.App(f"{settings.topic_prefix}{role}", **conf)
    return app


def raw_topic(app: faust.App, settings: Settings, *names: str) -> Any:
    """``names`` as one faust topic of bytes keys and values, decoded by us.

    ``key_type=bytes`` alone does not make faust's serializers raw (it still runs
    its default codec, and a decode error kills the agent after acknowledging)."""
    return app.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )


def bytes_table(app: faust.App, settings: Settings, name: str) -> Any:
    """A RocksDB table of bytes keys and values, one database per partition
    (addressed through :class:`~headrace.streams.partition_store.PartitionStore`)."""
    return app.Table(name, key_type=bytes, value_type=bytes, partitions=settings.partitions)
