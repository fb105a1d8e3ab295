"""The signal service's table: one record per address, and an expiry index for the sweep.

Layout of a partition's RocksDB database (keys are bytes; ``|`` is concatenation):

``a | address`` → :class:`~headrace.services.signals.address.Address` (JSON)
    the waits, buffered signals and remembered ids of one address;
``e | expiry (8 bytes, big-endian ms) | address`` → empty
    the address's earliest expiry (``Address.indexed``), so the sweep finds the
    addresses with something to drop by a range scan from ``e`` to now.

Writes go through :class:`~headrace.streams.batched_store.BatchedChangelogStore`,
changelog first: the service produces the changelog records of
:meth:`AddressBook.changes` and, once Kafka has acknowledged them, applies them
in one RocksDB write per partition (``write_acked``), before faust may commit
the batch's offsets.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from headrace.services.signals.address import Address
from headrace.streams.batched_store import BatchedChangelogStore

RECORD = b"a"
EXPIRY = b"e"
_EXPIRY_END = b"f"
_U64 = struct.Struct(">Q")


def record_key(name: str) -> bytes:
    return RECORD + name.encode()


def expiry_key(expires: int, name: str) -> bytes:
    return EXPIRY + _U64.pack(max(0, expires)) + name.encode()


def split_expiry_key(key: bytes) -> tuple[int, str]:
    return _U64.unpack_from(key, 1)[0], key[9:].decode()


def address_of(key: bytes) -> str:
    """The address a key of the table belongs to (a record or an expiry key)."""
    return key[1:].decode() if key[:1] == RECORD else split_expiry_key(key)[1]


class AddressBook:
    """Loads and saves :class:`Address` records of the partitions this worker owns."""

    def __init__(self, store: BatchedChangelogStore) -> None:
        self.store = store

    def load(self, partition: int, name: str) -> Address | None:
        raw = self.store.get(partition, record_key(name))
        return None if raw is None else Address.from_bytes(name, raw)

    def changes(
        self, addresses: Iterable[Address], stale: Iterable[bytes] = ()
    ) -> tuple[dict[bytes, bytes], list[bytes]]:
        """The puts and deletes that write ``addresses`` (an empty one is deleted) and re-file
        them for the sweep; ``stale`` expiry keys are deleted with them."""
        puts: dict[bytes, bytes] = {}
        deletes: list[bytes] = list(stale)
        for a in addresses:
            nxt = None if a.empty else a.next_expiry()
            if a.indexed is not None and a.indexed != nxt:
                deletes.append(expiry_key(a.indexed, a.name))
            a.indexed = nxt
            if nxt is not None:
                puts[expiry_key(nxt, a.name)] = b""
            if a.empty:
                deletes.append(record_key(a.name))
            else:
                # Written even when nothing changed (a redelivered message): its changelog
                # record may be the one a crash kept from Kafka.
                puts[record_key(a.name)] = a.to_bytes()
        return puts, [k for k in deletes if k not in puts]

    def due(self, partition: int, now: int, limit: int) -> list[tuple[bytes, str]]:
        """Expiry keys at or before ``now`` (earliest first) and their addresses."""
        stop = EXPIRY + _U64.pack(max(0, now) + 1)
        return [
            (key, split_expiry_key(key)[1])
            for key, _ in self.store.scan(partition, EXPIRY, min(stop, _EXPIRY_END), limit)
        ]
