"""The tenant partitioner: the one function every run-keyed producer uses.

``partition = (h(tenant) + h(run_id) % spread(tenant)) % P``

``h`` is Kafka's own murmur2 (the Java client's default partitioner hash,
``Utils.toPositive(Utils.murmur2(bytes))``) over the UTF-8 bytes, so a service
in Java, Go or anything with a murmur2 can compute the same partition. With the
default spread of 1 all of a tenant's runs share one partition and stay in
order; a large tenant gets ``spread`` consecutive partitions starting at its
home partition.

The spread of a tenant must not change while it has live runs: it moves runs
to other partitions, away from their history and state.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), as a signed 32-bit int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    n4 = length // 4
    for i in range(n4):
        i4 = i * 4
        k = data[i4] | (data[i4 + 1] << 8) | (data[i4 + 2] << 16) | (data[i4 + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    rest = length % 4
    tail = n4 * 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def positive_hash(text: str) -> int:
    """``toPositive(murmur2(utf8(text)))``, as Kafka's default partitioner computes it."""
    return murmur2(text.encode("utf-8")) & 0x7FFFFFFF


_tenant_hash = lru_cache(maxsize=65536)(positive_hash)


def partition_for(
    tenant: str,
    run_id: str,
    partitions: int,
    spread: int | Mapping[str, int] = 1,
) -> int:
    """The partition of every message about run ``tenant/run_id``.

    ``spread`` is either the tenant's spread or a mapping tenant -> spread
    (tenants not in it get 1). It is clamped to ``partitions``.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    s = spread.get(tenant, 1) if isinstance(spread, Mapping) else spread
    if s < 1:
        raise ValueError(f"spread for tenant {tenant!r} must be >= 1, got {s}")
    s = min(s, partitions)
    offset = positive_hash(run_id) % s if s > 1 else 0
    return (_tenant_hash(tenant) + offset) % partitions


def run_key(tenant: str, run_id: str) -> str:
    """The record key of every message about a run."""
    return f"{tenant}/{run_id}"


def split_run_key(key: str | bytes) -> tuple[str, str]:
    """Inverse of :func:`run_key`; raises ``ValueError`` on a key without a tenant."""
    text = key.decode("utf-8") if isinstance(key, bytes) else key
    tenant, sep, run_id = text.partition("/")
    if not sep or not tenant or not run_id:
        raise ValueError(f"run key {text!r} is not '<tenant>/<run_id>'")
    return tenant, run_id
