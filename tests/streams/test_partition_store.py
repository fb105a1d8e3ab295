"""PartitionStore reaches below faust's Table API (``Store._db_for_partition``).

These tests pin what it relies on, against the faust and rocksdict installed:
one raw-mode RocksDB per table partition, atomic batched writes, ordered scans,
and one changelog record per written or deleted key. No broker is needed: the
store opens its databases lazily and the changelog send is observed, not
produced (the orchestrator's replay tests cover the changelog on Kafka).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.settings import Settings
from headrace.streams.app import make_app
from headrace.streams.partition_store import PartitionStore


@pytest.fixture
def store(tmp_path: Path) -> tuple[PartitionStore, list[tuple[int, bytes, bytes | None]]]:
    conf = Settings(bootstrap="127.0.0.1:1", topic_prefix="ps.", data_dir=tmp_path)
    app = make_app(conf, "probe", instance="t")
    table = app.Table("t", key_type=bytes, value_type=bytes, partitions=4)
    sent: list[tuple[int, bytes, bytes | None]] = []

    def send_changelog(partition: int, key: Any, value: Any, *a: Any, **kw: Any) -> None:
        sent.append((partition, key, value))

    table.send_changelog = send_changelog  # type: ignore[method-assign]
    return PartitionStore(table), sent


def test_each_partition_is_its_own_rocksdb_database(store: Any) -> None:
    ps, _ = store
    assert type(ps.db(0)).__name__ == "Rdict"
    ps.write(1, {b"k": b"one"})
    ps.write(2, {b"k": b"two"})
    assert ps.get(1, b"k") == b"one"
    assert ps.get(2, b"k") == b"two"
    assert ps.get(3, b"k") is None


def test_a_write_sends_a_changelog_record_per_key_and_deletes_are_tombstones(store: Any) -> None:
    ps, sent = store
    ps.write(0, {b"a": b"1", b"b": b"2"})
    ps.write(0, {b"c": b"3"}, deletes=[b"a"])
    assert ps.get(0, b"a") is None
    assert sent == [(0, b"a", b"1"), (0, b"b", b"2"), (0, b"a", None), (0, b"c", b"3")]


def test_an_empty_write_touches_nothing(store: Any) -> None:
    ps, sent = store
    ps.write(0, {}, deletes=())
    assert sent == []


@settings(max_examples=50, deadline=None)
@given(
    keys=st.sets(st.binary(min_size=1, max_size=6), max_size=30),
    start=st.binary(max_size=3),
    stop=st.none() | st.binary(min_size=1, max_size=3),
    limit=st.none() | st.integers(0, 10),
)
def test_scans_answer_in_key_order_within_bounds(
    tmp_path_factory: pytest.TempPathFactory,
    keys: set[bytes],
    start: bytes,
    stop: bytes | None,
    limit: int | None,
) -> None:
    conf = Settings(
        bootstrap="127.0.0.1:1", topic_prefix="ps.", data_dir=tmp_path_factory.mktemp("scan")
    )
    table = make_app(conf, "probe", instance="s").Table(
        "t", key_type=bytes, value_type=bytes, partitions=1
    )
    table.send_changelog = lambda *a, **kw: None  # type: ignore[method-assign]
    ps = PartitionStore(table)
    ps.write(0, {k: k[::-1] for k in keys})
    want = sorted(k for k in keys if k >= start and (stop is None or k < stop))
    if limit is not None:
        want = want[:limit]
    assert list(ps.scan(0, start, stop, limit)) == [(k, k[::-1]) for k in want]
