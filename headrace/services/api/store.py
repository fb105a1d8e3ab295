"""The query model on disk: views, their indexes and the ``events`` offsets, in one RocksDB.

Everything a batch of events changes — run views, approval records, step
samples, the indexes and counters over them, *and* the offset of every
``events`` partition the batch read up to — goes into one ``WriteBatch``, so
the database is always the fold of ``events`` up to its stored offsets: a
crash never applies an event twice (the counters would drift) nor skips one.

Keys (raw bytes; ``\\0`` separates parts, which ids never contain):

=======================================================  =========================
``o`` partition(4)                                         next ``events`` offset (8)
``r`` tenant ``\\0`` run_id                                run view (JSON)
``t`` type ``\\0`` tenant ``\\0`` run_id                   type index (empty)
``s`` status ``\\0`` type ``\\0`` tenant ``\\0`` run_id    status index (empty)
``c`` type ``\\0`` tenant ``\\0`` status                   run count (8)
``a`` tenant ``\\0`` approval_id                           approval record (JSON)
``q`` status ``\\0`` tenant ``\\0`` approval_id            approval status index
``i`` approval_id ``\\0`` tenant                         approval id index
``d`` type ``\\0`` step ``\\0`` ended_at(8) ``\\0`` tenant ``\\0`` run_id ``\\0`` seq(8)
                                                           step sample (JSON)
``m`` name                                                 metadata (the topic read)
=======================================================  =========================
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rocksdict import Options, Rdict, WriteBatch

from headrace.errors import ErrorCode, HeadraceError

SEP = b"\x00"


def _j(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _k(prefix: bytes, *parts: str | bytes) -> bytes:
    return prefix + SEP.join(p if isinstance(p, bytes) else p.encode() for p in parts)


def _u64(n: int) -> bytes:
    return max(0, n).to_bytes(8, "big")


def run_key(tenant: str, run_id: str) -> bytes:
    return _k(b"r", tenant, run_id)


def approval_key(tenant: str, approval_id: str) -> bytes:
    return _k(b"a", tenant, approval_id)


@dataclass(slots=True)
class Changes:
    """What one batch of events changed, ready to be written atomically."""

    runs: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    run_status_before: dict[bytes, str | None] = field(default_factory=dict)
    approvals: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    approval_status_before: dict[bytes, str | None] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    offsets: dict[int, int] = field(default_factory=dict)


class ViewStore:
    """The API's RocksDB: one writer (the indexer thread), many readers (HTTP handlers)."""

    def __init__(self, path: Path, topic: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_max_open_files(256)
        try:
            self.db = Rdict(str(path / "views.db"), opts)
        except Exception as exc:
            raise HeadraceError(
                ErrorCode.CONFIG_INVALID,
                f"cannot open the query database at {path}: {exc} — is another api process "
                "using this data dir? Give each its own (--instance or HEADRACE_DATA_DIR)",
            ) from exc
        stored = self.db.get(b"mtopic")
        if stored is not None and stored.decode() != topic:
            raise HeadraceError(
                ErrorCode.CONFIG_INVALID,
                f"the query database at {path} was built from {stored.decode()!r}, not "
                f"{topic!r} — use another data dir, or delete this one to rebuild it",
            )
        if stored is None:
            self.db.put(b"mtopic", topic.encode())

    def close(self) -> None:
        self.db.close()

    # -- offsets ----------------------------------------------------------------

    def offsets(self) -> dict[int, int]:
        """Next offset to read, per ``events`` partition (absent: from the beginning)."""
        return {int.from_bytes(k[1:5], "big"): int.from_bytes(v, "big") for k, v in self.scan(b"o")}

    # -- reads ------------------------------------------------------------------

    def _json(self, key: bytes) -> dict[str, Any] | None:
        raw = self.db.get(key)
        return None if raw is None else json.loads(raw)

    def run(self, tenant: str, run_id: str) -> dict[str, Any] | None:
        return self._json(run_key(tenant, run_id))

    def run_at(self, key: bytes) -> dict[str, Any] | None:
        return self._json(key)

    def approval(self, tenant: str, approval_id: str) -> dict[str, Any] | None:
        return self._json(approval_key(tenant, approval_id))

    def approval_at(self, key: bytes) -> dict[str, Any] | None:
        return self._json(key)

    def scan(self, prefix: bytes, after: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Keys with ``prefix`` in order (strictly after ``after`` when given)."""
        it = self.db.iter()
        it.seek(after + SEP if after is not None else prefix)
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                return
            yield key, it.value()
            it.next()

    def count(self, key: bytes) -> int:
        raw = self.db.get(key)
        return 0 if raw is None else int.from_bytes(raw, "big")

    # -- the one write -------------------------------------------------------------

    def write(self, ch: Changes) -> None:
        """Apply one batch's changes and offsets atomically."""
        wb = WriteBatch(raw_mode=True)
        counts: dict[bytes, int] = {}
        for key, view in ch.runs.items():
            wb.put(key, _j(view))
            tenant, run_id, wtype, status = (
                view["tenant"],
                view["run_id"],
                view["type"],
                view["status"],
            )
            before = ch.run_status_before.get(key)
            if key not in ch.run_status_before or before == status:
                continue
            if before is None:
                wb.put(_k(b"t", wtype, tenant, run_id), b"")
            else:
                wb.delete(_k(b"s", before, wtype, tenant, run_id))
                ck = _k(b"c", wtype, tenant, before)
                counts[ck] = counts.get(ck, 0) - 1
            wb.put(_k(b"s", status, wtype, tenant, run_id), b"")
            ck = _k(b"c", wtype, tenant, status)
            counts[ck] = counts.get(ck, 0) + 1
        for ck, delta in counts.items():
            if delta:
                wb.put(ck, _u64(self.count(ck) + delta))
        for key, rec in ch.approvals.items():
            wb.put(key, _j(rec))
            before = ch.approval_status_before.get(key)
            if before == rec["status"]:
                continue
            if before is None:
                wb.put(_k(b"i", rec["approval_id"], rec["tenant"]), b"")
            else:
                wb.delete(_k(b"q", before, rec["tenant"], rec["approval_id"]))
            wb.put(_k(b"q", rec["status"], rec["tenant"], rec["approval_id"]), b"")
        for s in ch.samples:
            key = _k(
                b"d",
                s["type"],
                s["step"],
                _u64(s["ended_at"]),
                s["tenant"],
                s["run_id"],
                _u64(s["seq"]),
            )
            wb.put(key, _j(s))
        for partition, offset in ch.offsets.items():
            wb.put(b"o" + partition.to_bytes(4, "big"), _u64(offset))
        self.db.write(wb)


def split(key: bytes, prefix_len: int = 1) -> list[str]:
    """The parts of an index key after its one-byte prefix."""
    return [p.decode() for p in key[prefix_len:].split(SEP)]


def status_prefix(status: str, wtype: str | None = None, tenant: str | None = None) -> bytes:
    """Index keys of runs in ``status`` (of ``wtype``, and of ``tenant`` within it)."""
    parts = [status]
    if wtype is not None:
        parts.append(wtype)
        if tenant is not None:
            parts.append(tenant)
    return _k(b"s", *parts) + SEP


def type_prefix(wtype: str, tenant: str | None = None) -> bytes:
    return _k(b"t", wtype, *(() if tenant is None else (tenant,))) + SEP


def tenant_prefix(tenant: str | None) -> bytes:
    return b"r" if tenant is None else _k(b"r", tenant) + SEP


def counter_prefix(wtype: str | None, tenant: str | None) -> bytes:
    if wtype is None:
        return b"c"
    return _k(b"c", wtype, *(() if tenant is None else (tenant,))) + SEP


def approval_status_prefix(status: str | None, tenant: str | None) -> bytes:
    if status is None:
        return b"a" if tenant is None else _k(b"a", tenant) + SEP
    return _k(b"q", status, *(() if tenant is None else (tenant,))) + SEP


def approval_id_prefix(approval_id: str) -> bytes:
    return _k(b"i", approval_id) + SEP


def loads(raw: bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(raw)
    return value


def sample_prefix(wtype: str | None) -> bytes:
    return b"d" if wtype is None else _k(b"d", wtype) + SEP
