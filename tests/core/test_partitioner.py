"""The tenant partitioner: Kafka's murmur2, stable everywhere, spread respected, uniform."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.core.partitioner import (
    murmur2,
    partition_for,
    positive_hash,
    run_key,
    split_run_key,
)

# The values Kafka's own UtilsTest#testMurmur2 pins for the Java client.
KAFKA_VECTORS = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
}


@pytest.mark.parametrize(("text", "expected"), KAFKA_VECTORS.items())
def test_murmur2_matches_kafkas_test_vectors(text: str, expected: int) -> None:
    assert murmur2(text.encode()) == expected


def test_positive_hash_is_kafkas_to_positive() -> None:
    for text, value in KAFKA_VECTORS.items():
        assert positive_hash(text) == value & 0x7FFFFFFF


def test_murmur2_covers_every_tail_length() -> None:
    values = {murmur2(b"abcdefgh"[:n]) for n in range(9)}
    assert len(values) == 9


_CHILD = """
import json, sys
from headrace.core.partitioner import partition_for
cases = json.loads(sys.stdin.read())
print(json.dumps([partition_for(t, r, p, s) for t, r, p, s in cases]))
"""


def test_partition_is_the_same_in_another_process_with_another_hash_seed() -> None:
    cases = [
        (f"tenant-{i}", f"run-{i * 7}", p, s)
        for i in range(300)
        for p, s in ((1, 1), (6, 1), (12, 3), (64, 8))
    ]
    here = [partition_for(t, r, p, s) for t, r, p, s in cases]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    assert json.loads(out.stdout) == here


@settings(max_examples=60, deadline=None)
@given(
    tenant=st.text(min_size=1, max_size=20),
    partitions=st.integers(1, 48),
    spread=st.integers(1, 64),
)
def test_a_tenant_uses_exactly_spread_consecutive_partitions(
    tenant: str, partitions: int, spread: int
) -> None:
    used = {partition_for(tenant, f"run-{i}", partitions, spread) for i in range(800)}
    home = positive_hash(tenant) % partitions
    width = min(spread, partitions)
    assert used == {(home + k) % partitions for k in range(width)}


def test_spread_mapping_applies_per_tenant_and_defaults_to_one() -> None:
    spreads = {"bigco": 4}
    big = {partition_for("bigco", f"r{i}", 12, spreads) for i in range(400)}
    small = {partition_for("smallco", f"r{i}", 12, spreads) for i in range(400)}
    assert len(big) == 4
    assert len(small) == 1


def test_a_run_always_gets_the_same_partition() -> None:
    assert len({partition_for("acme", "run-1", 12, 4) for _ in range(10)}) == 1


@pytest.mark.parametrize("partitions", [6, 12, 60])
def test_ten_thousand_tenants_spread_evenly_over_partitions(partitions: int) -> None:
    counts = Counter(partition_for(f"tenant-{i}", "run", partitions) for i in range(10_000))
    assert len(counts) == partitions
    expected = 10_000 / partitions
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    # 99.9th percentile of chi-square for (partitions - 1) degrees of freedom:
    # 20.5 (5), 31.3 (11), 99.6 (59).
    limit = {6: 20.5, 12: 31.3, 60: 99.6}[partitions]
    assert chi2 < limit, (chi2, counts)
    # No single partition strays more than five binomial standard deviations.
    sigma = (expected * (1 - 1 / partitions)) ** 0.5
    assert all(abs(c - expected) < 5 * sigma for c in counts.values()), counts


def test_runs_of_one_tenant_spread_evenly_over_its_partitions() -> None:
    counts = Counter(partition_for("bigco", f"run-{i}", 24, 6) for i in range(12_000))
    assert len(counts) == 6
    assert max(counts.values()) / min(counts.values()) < 1.15


@pytest.mark.parametrize(("partitions", "spread"), [(0, 1), (6, 0), (6, {"a": 0})])
def test_bad_partition_count_or_spread_is_refused(partitions: int, spread: object) -> None:
    with pytest.raises(ValueError):
        partition_for("a", "r", partitions, spread)  # type: ignore[arg-type]


@given(st.text(min_size=1).filter(lambda t: "/" not in t), st.text(min_size=1))
def test_run_key_round_trips(tenant: str, run_id: str) -> None:
    key = run_key(tenant, run_id)
    assert split_run_key(key) == (tenant, run_id)
    assert split_run_key(key.encode()) == (tenant, run_id)


@pytest.mark.parametrize("key", ["norun", "/r1", "acme/", ""])
def test_split_run_key_refuses_keys_without_tenant_and_run(key: str) -> None:
    with pytest.raises(ValueError):
        split_run_key(key)
