"""The per-run hash chain: seal events onto it, verify a run's log from its bytes.

``hash = sha256(prev_hash || body[:-32])`` where ``body`` is the event's Avro
binary body (the message without its framing header) and its last 32 bytes are
the ``hash`` field itself; ``prev_hash`` (the 32 bytes before that) is the
previous event's ``hash``, or 32 zero bytes for ``seq`` 1. Verification reads
``prev_hash`` and ``hash`` straight from the bytes and never re-encodes, so any
tool can do the same (docs/events.md has a standalone verifier).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from headrace.core.codec import HASH_LEN, HEADER_LEN, Codec, body_of, default_codec, event_to_record
from headrace.core.envelope import ZERO_HASH, Event
from headrace.errors import ErrorCode, HeadraceError


def seal(
    events: Sequence[Event], prev_hash: bytes = ZERO_HASH, *, codec: Codec | None = None
) -> list[tuple[Event, bytes]]:
    """Chain ``events`` (one run, consecutive ``seq``) after ``prev_hash``.

    Returns each event with ``prev_hash``/``hash`` filled in, and its
    single-object bytes, encoded once.
    """
    codec = codec or default_codec()
    schema = codec.event_schema
    out: list[tuple[Event, bytes]] = []
    prev = prev_hash
    for i, event in enumerate(events):
        if i and (
            event.seq != events[i - 1].seq + 1
            or event.run_id != events[0].run_id
            or event.tenant != events[0].tenant
        ):
            raise HeadraceError(
                ErrorCode.INTERNAL,
                f"cannot seal {event.run_key}#{event.seq} after "
                f"{events[i - 1].run_key}#{events[i - 1].seq}: a batch is one run, consecutive seq",
            )
        record = event_to_record(event)
        record["prev_hash"] = prev
        record["hash"] = ZERO_HASH
        try:
            raw = codec.encode_record(schema, record)
        except HeadraceError as exc:  # named here, not up front: the name costs on every event
            what = f"event {event.run_key}#{event.seq}"
            raise HeadraceError(exc.code, f"{what}: {exc.message}") from exc
        end = len(raw) - HASH_LEN
        h = hashlib.sha256(prev)
        h.update(memoryview(raw)[HEADER_LEN:end])
        digest = h.digest()
        out.append((event.with_chain(prev, digest), raw[:end] + digest))
        prev = digest
    return out


class Break(StrEnum):
    """Why a run's log does not verify."""

    TAMPERED = "tampered"  # an event's hash does not match its bytes
    REORDERED = "reordered"  # events are out of seq order, or prev_hash points further back
    MISSING = "missing"  # a seq is absent, or prev_hash does not link to the event before
    FORKED = "forked"  # two different events with the same seq
    BAD_START = "bad_start"  # the first event's prev_hash is not the expected start hash
    FOREIGN = "foreign"  # an event of another run
    UNDECODABLE = "undecodable"  # not a headrace event (framing, unknown schema, corrupt body)


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What :func:`verify` found.

    ``bad_seq`` is the first seq whose event is not where, or not what, it
    should be; ``index`` is the position of the offending record in the input.
    """

    ok: bool
    count: int  # distinct events verified
    duplicates: int  # byte-identical redeliveries collapsed
    last_seq: int  # seq of the last verified event
    head: bytes  # hash of the last verified event
    reason: Break | None = None
    bad_seq: int | None = None
    index: int | None = None
    detail: str = ""

    def __str__(self) -> str:
        if self.ok:
            return (
                f"ok: {self.count} events, last seq {self.last_seq}, head {self.head.hex()[:16]}…"
                f", {self.duplicates} duplicates collapsed"
            )
        return f"{self.reason} at seq {self.bad_seq} (record {self.index}): {self.detail}"

    def raise_if_broken(self, run: str = "run") -> None:
        """Raise ``HeadraceError(CHAIN_BROKEN)`` unless the log verified."""
        if not self.ok:
            raise HeadraceError(
                ErrorCode.CHAIN_BROKEN,
                f"{run}: hash chain broken — {self} — the log was altered or events were "
                "lost; do not trust its history past seq "
                f"{self.last_seq}",
            )


def verify(
    records: Iterable[bytes],
    *,
    start_seq: int = 1,
    start_hash: bytes = ZERO_HASH,
    run_key: str | None = None,
    decode: Callable[[bytes], Event] | None = None,
) -> ChainReport:
    """Verify one run's records (message values, in log order) from their bytes alone.

    Byte-identical redeliveries are collapsed and counted. Stops at the first
    fault. ``start_seq``/``start_hash`` verify a suffix of a run (the seq
    expected first, and the hash of the event before it). ``run_key`` names the
    run (default: the run of the first record). ``decode`` reads the seq and
    run of a record (default: the single-object codec).
    """
    decode = decode or default_codec().decode_event
    return _Verifier(list(records), start_seq, start_hash, run_key, decode)()


class _Verifier:
    def __init__(
        self,
        records: list[bytes],
        start_seq: int,
        start_hash: bytes,
        run_key: str | None,
        decode: Callable[[bytes], Event],
    ) -> None:
        self.records = records
        self.start_seq = start_seq
        self.start_hash = start_hash
        self.decode = decode
        self.last_seq = start_seq - 1
        self.head = start_hash
        self.seen: set[bytes] = set()
        self.by_seq: dict[int, bytes] = {}
        self.seq_of_hash: dict[bytes, int] = {start_hash: start_seq - 1}
        self.duplicates = 0
        self.run = run_key

    def __call__(self) -> ChainReport:
        for index, record in enumerate(self.records):
            raw = bytes(record)
            if raw in self.seen:
                self.duplicates += 1
                continue
            fault = self._check(index, raw)
            if fault is not None:
                return fault
            self.seen.add(raw)
        return self._report()

    def _check(self, index: int, raw: bytes) -> ChainReport | None:
        expected = self.last_seq + 1
        try:
            body = body_of(raw)
        except HeadraceError as exc:
            return self._fail(Break.UNDECODABLE, expected, index, exc.message)
        if len(body) < 2 * HASH_LEN:
            return self._fail(Break.UNDECODABLE, expected, index, "record too short for an event")
        prev, claimed = bytes(body[-2 * HASH_LEN : -HASH_LEN]), bytes(body[-HASH_LEN:])
        h = hashlib.sha256(prev)
        h.update(body[:-HASH_LEN])
        if h.digest() != claimed:
            return self._fail(
                Break.TAMPERED,
                self._seq_of_damaged(raw, prev, expected),
                index,
                f"hash {claimed.hex()[:16]}… does not match the event's bytes",
            )
        try:
            event = self.decode(raw)
        except HeadraceError as exc:
            return self._fail(Break.UNDECODABLE, expected, index, exc.message)
        if self.run is None:
            self.run = event.run_key
        elif event.run_key != self.run:
            return self._fail(
                Break.FOREIGN, expected, index, f"event of {event.run_key} in the log of {self.run}"
            )
        return self._place(index, raw, event.seq, prev, claimed, expected)

    def _place(
        self, index: int, raw: bytes, seq: int, prev: bytes, claimed: bytes, expected: int
    ) -> ChainReport | None:
        if seq in self.by_seq:
            return self._fail(Break.FORKED, seq, index, f"a second, different event with seq {seq}")
        if seq < expected:
            return self._fail(
                Break.REORDERED, seq, index, f"seq {seq} comes before the start seq {expected}"
            )
        if seq > expected:
            if self._later_has_seq(index, expected):
                return self._fail(
                    Break.REORDERED, expected, index, f"seq {seq} appears before seq {expected}"
                )
            return self._fail(
                Break.MISSING, expected, index, f"seq jumps from {self.last_seq} to {seq}"
            )
        if prev != self.head:
            if seq == self.start_seq:
                return self._fail(
                    Break.BAD_START,
                    seq,
                    index,
                    f"first prev_hash is {prev.hex()[:16]}…, expected {self.head.hex()[:16]}…",
                )
            if prev in self.seq_of_hash:
                return self._fail(
                    Break.REORDERED,
                    seq,
                    index,
                    f"prev_hash points at seq {self.seq_of_hash[prev]}, not {self.last_seq}",
                )
            if self._later_has_seq(index, seq):
                return self._fail(Break.FORKED, seq, index, f"two different events with seq {seq}")
            return self._fail(
                Break.MISSING,
                seq,
                index,
                f"prev_hash does not link to seq {self.last_seq}: an event before it is "
                "missing or was replaced",
            )
        self.by_seq[seq] = raw
        self.seq_of_hash[claimed] = seq
        self.last_seq, self.head = seq, claimed
        return None

    def _seq_of_damaged(self, raw: bytes, prev: bytes, expected: int) -> int:
        # A damaged record's seq field cannot be trusted; place it by the hash it
        # links to, and only fall back to what it claims.
        if prev in self.seq_of_hash:
            return self.seq_of_hash[prev] + 1
        try:
            return self.decode(raw).seq
        except HeadraceError:
            return expected

    def _later_has_seq(self, index: int, seq: int) -> bool:
        for record in self.records[index + 1 :]:
            try:
                if self.decode(bytes(record)).seq == seq:
                    return True
            except HeadraceError:
                continue
        return False

    def _report(self) -> ChainReport:
        return ChainReport(
            ok=True,
            count=len(self.by_seq),
            duplicates=self.duplicates,
            last_seq=self.last_seq,
            head=self.head,
        )

    def _fail(self, reason: Break, seq: int, index: int, detail: str) -> ChainReport:
        return ChainReport(
            ok=False,
            count=len(self.by_seq),
            duplicates=self.duplicates,
            last_seq=self.last_seq,
            head=self.head,
            reason=reason,
            bad_seq=seq,
            index=index,
            detail=detail,
        )
