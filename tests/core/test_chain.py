"""The per-run hash chain: sealing, verification from bytes, and docs/events.md kept true."""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cwe_strategies import runs
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from headrace.core.chain import Break, seal, verify
from headrace.core.codec import decode_event
from headrace.core.envelope import ZERO_HASH, Event, EventType
from headrace.errors import ErrorCode, HeadraceError

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def _run(n: int, tenant: str = "acme", run_id: str = "r1") -> list[Event]:
    return [
        Event(tenant, run_id, "order", 1, i, EventType.StepCompleted, 1000 + i, f"c{i}", {"i": i})
        for i in range(1, n + 1)
    ]


def _records(events: list[Event], prev: bytes = ZERO_HASH) -> list[bytes]:
    return [raw for _, raw in seal(events, prev)]


def _hashes(events: list[Event]) -> list[bytes]:
    return [event.hash for event, _ in seal(events)]


# --- sealing ---------------------------------------------------------------


def test_seal_links_each_event_to_the_one_before() -> None:
    sealed = seal(_run(4))
    assert sealed[0][0].prev_hash == ZERO_HASH
    for (before, _), (after, _) in itertools.pairwise(sealed):
        assert after.prev_hash == before.hash


def test_hash_is_sha256_of_prev_hash_and_the_body_without_its_last_32_bytes() -> None:
    for event, raw in seal(_run(3)):
        body = raw[10:]
        assert body[-64:-32] == event.prev_hash
        assert body[-32:] == event.hash
        assert hashlib.sha256(event.prev_hash + body[:-32]).digest() == event.hash


def test_sealed_bytes_decode_to_the_sealed_event() -> None:
    for event, raw in seal(_run(3)):
        assert decode_event(raw) == event


def test_sealing_in_batches_equals_sealing_at_once() -> None:
    events = _run(6)
    whole = seal(events)
    first = seal(events[:2])
    rest = seal(events[2:], first[-1][0].hash)
    assert first + rest == whole


@pytest.mark.parametrize(
    "events",
    [
        [_run(3)[0], _run(3)[2]],
        [_run(1)[0], _run(2, run_id="other")[1]],
        [_run(1)[0], _run(2, tenant="other")[1]],
        [_run(1, "a/b", "c")[0], _run(2, "a", "b/c")[1]],  # same run_key, other run
    ],
)
def test_seal_refuses_a_batch_that_is_not_one_run_in_seq_order(events: list[Event]) -> None:
    with pytest.raises(HeadraceError) as info:
        seal(events)
    assert info.value.code is ErrorCode.INTERNAL


def test_an_event_that_does_not_encode_is_named_in_the_error() -> None:
    events = _run(2)
    events[1] = replace(events[1], idempotency_key="\ud800")
    with pytest.raises(HeadraceError) as info:
        seal(events)
    assert info.value.code is ErrorCode.ENCODE_FAILED
    assert info.value.message.startswith("event acme/r1#2: ")
    assert "does not fit Avro schema" in info.value.message


# --- verification: the good cases ------------------------------------------


def test_an_intact_log_verifies() -> None:
    events = _run(5)
    report = verify(_records(events))
    assert report.ok, report
    assert (report.count, report.duplicates, report.last_seq) == (5, 0, 5)
    assert report.head == _hashes(events)[-1]


def test_an_empty_log_verifies() -> None:
    report = verify([])
    assert report.ok and report.count == 0 and report.head == ZERO_HASH


@settings(max_examples=100)
@given(runs(), st.data())
def test_byte_identical_redeliveries_are_collapsed_and_counted(
    run: list[Event], data: st.DataObject
) -> None:
    records = _records(run)
    log: list[bytes] = []
    redelivered = 0
    for i, raw in enumerate(records):
        log.append(raw)
        for j in data.draw(st.lists(st.integers(0, i), max_size=2)):
            log.append(records[j])
            redelivered += 1
    report = verify(log)
    assert report.ok, report
    assert (report.count, report.duplicates) == (len(run), redelivered)


def test_a_suffix_verifies_from_a_trusted_seq_and_hash() -> None:
    events = _run(6)
    records, hashes = _records(events), _hashes(events)
    assert verify(records[3:], start_seq=4, start_hash=hashes[2]).ok
    report = verify(records[3:], start_seq=4, start_hash=hashes[1])
    assert (report.reason, report.bad_seq) == (Break.BAD_START, 4)


# --- verification: every kind of fault, with the right seq and reason -----


@settings(max_examples=300)
@given(runs(), st.data())
def test_any_single_byte_change_is_detected_at_its_seq(
    run: list[Event], data: st.DataObject
) -> None:
    records = _records(run)
    k = data.draw(st.integers(0, len(records) - 1), label="event")
    raw = bytearray(records[k])
    i = data.draw(st.integers(0, len(raw) - 1), label="byte")
    raw[i] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[i]), label="value")
    records[k] = bytes(raw)
    report = verify(records, run_key=run[0].run_key)
    assert not report.ok
    assert (report.bad_seq, report.index) == (k + 1, k), report
    if i >= 10:  # the Avro body: covered by the hash
        assert report.reason is Break.TAMPERED, report
    else:  # the framing header: not hashed, but no longer decodes
        assert report.reason in (Break.UNDECODABLE, Break.TAMPERED), report


@settings(max_examples=200)
@given(runs(min_size=2), st.data())
def test_any_reordering_is_reported_at_the_first_seq_out_of_place(
    run: list[Event], data: st.DataObject
) -> None:
    records = _records(run)
    order = data.draw(st.permutations(range(len(records))))
    assume(order != list(range(len(records))))
    first = next(p for p, i in enumerate(order) if p != i)
    report = verify([records[i] for i in order])
    assert (report.reason, report.bad_seq, report.index) == (Break.REORDERED, first + 1, first)


@settings(max_examples=200)
@given(runs(min_size=2), st.data())
def test_deleting_an_event_is_reported_as_missing_at_its_seq(
    run: list[Event], data: st.DataObject
) -> None:
    records = _records(run)
    k = data.draw(st.integers(0, len(records) - 2))
    del records[k]
    report = verify(records)
    assert (report.reason, report.bad_seq, report.index) == (Break.MISSING, k + 1, k)


def test_deleting_the_last_events_is_not_visible_in_the_chain_alone() -> None:
    events = _run(5)
    report = verify(_records(events)[:3])
    assert report.ok and report.last_seq == 3
    assert report.head != _hashes(events)[-1]  # compare the head with a trusted one


@settings(max_examples=200)
@given(runs(), st.data())
def test_inserting_a_second_version_of_an_event_is_a_fork_or_a_reorder(
    run: list[Event], data: st.DataObject
) -> None:
    sealed = seal(run)
    records = [raw for _, raw in sealed]
    k = data.draw(st.integers(1, len(run)), label="seq")
    prev = sealed[k - 2][0].hash if k > 1 else ZERO_HASH
    forged = run[k - 1]
    forged = replace(forged, payload={**forged.payload, "forged": True})
    [(_, fake)] = seal([forged], prev)
    p = data.draw(st.integers(0, len(records)), label="position")
    records.insert(p, fake)
    report = verify(records)
    assert not report.ok
    if p >= k - 1:  # after the real event before it: two different events claim seq k
        assert (report.reason, report.bad_seq) == (Break.FORKED, k), report
        assert report.index == max(p, k)
    else:  # earlier than that: it jumps the queue
        assert (report.reason, report.bad_seq, report.index) == (Break.REORDERED, p + 1, p)


@settings(max_examples=200)
@given(runs(), st.data())
def test_inserting_garbage_is_detected_where_it_sits(run: list[Event], data: st.DataObject) -> None:
    records = _records(run)
    junk = data.draw(st.binary(max_size=200).filter(lambda b: b not in records))
    p = data.draw(st.integers(0, len(records)))
    records.insert(p, junk)
    report = verify(records)
    assert (report.bad_seq, report.index) == (p + 1, p), report
    assert report.reason in (Break.UNDECODABLE, Break.TAMPERED)


@pytest.mark.parametrize("where", [20, -40])  # in event_id; in prev_hash
def test_a_damaged_redelivery_is_reported_at_the_seq_it_copies(where: int) -> None:
    records = _records(_run(4))
    damaged = bytearray(records[1])
    damaged[where] ^= 0x01
    report = verify([*records[:3], bytes(damaged), records[3]])
    assert (report.reason, report.bad_seq, report.index) == (Break.TAMPERED, 2, 3)


def test_an_event_of_another_run_is_foreign() -> None:
    records = _records(_run(3))
    records.insert(2, _records(_run(1, run_id="r2"))[0])
    report = verify(records)
    assert (report.reason, report.bad_seq, report.index) == (Break.FOREIGN, 3, 2)
    first = verify(_records(_run(1, run_id="r2")) + records, run_key="acme/r1")
    assert (first.reason, first.bad_seq, first.index) == (Break.FOREIGN, 1, 0)


def test_a_first_event_not_chained_to_zeros_is_a_bad_start() -> None:
    report = verify(_records(_run(3), prev=b"\x01" * 32))
    assert (report.reason, report.bad_seq, report.index) == (Break.BAD_START, 1, 0)


def test_prev_hash_pointing_further_back_is_a_reorder() -> None:
    events = _run(4)
    hashes = _hashes(events)
    records = _records(events[:3]) + _records([events[3]], prev=hashes[1])
    report = verify(records)
    assert (report.reason, report.bad_seq, report.index) == (Break.REORDERED, 4, 3)
    assert "points at seq 2" in report.detail


def test_prev_hash_linking_nowhere_is_a_missing_event() -> None:
    events = _run(4)
    records = _records(events[:3]) + _records([events[3]], prev=b"\x07" * 32)
    report = verify(records)
    assert (report.reason, report.bad_seq) == (Break.MISSING, 4)


def test_a_broken_chain_raises_chain_broken_on_request() -> None:
    records = _records(_run(3))
    del records[1]
    with pytest.raises(HeadraceError) as info:
        verify(records).raise_if_broken("acme/r1")
    assert info.value.code is ErrorCode.CHAIN_BROKEN
    assert "missing at seq 2" in info.value.message
    verify(_records(_run(3))).raise_if_broken()


# --- docs/events.md stays true ---------------------------------------------


def _doc_block(marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->\n```[a-z]*\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"docs/events.md lost its <!-- {marker} --> block"
    return match.group(1)


def _doc_verifier() -> Any:
    namespace: dict[str, Any] = {}
    exec(compile(_doc_block("verifier"), str(DOC), "exec"), namespace)
    return namespace["verify_run"]


def _example() -> tuple[Event, bytes]:
    event = Event(
        "acme", "r1", "order", 1, 1, EventType.RunStarted, 1_735_689_600_000, "c1", {"n": 1}
    )
    [(sealed, raw)] = seal([event])
    return sealed, raw


def test_the_documented_example_is_what_the_codec_writes() -> None:
    sealed, raw = _example()
    documented = bytes.fromhex("".join(_doc_block("example-hex").split()))
    width = 80
    hexed = raw.hex()
    assert documented == raw, "update docs/events.md's example to:\n" + "\n".join(
        hexed[i : i + width] for i in range(0, len(hexed), width)
    )
    assert sealed.hash.hex() in DOC.read_text()
    assert f"{len(raw)}-byte" in DOC.read_text()


def test_the_documented_verifier_uses_only_hashlib() -> None:
    imports = re.findall(r"^\s*(?:import|from)\s+(\w+)", _doc_block("verifier"), re.M)
    assert imports == ["hashlib"]
    assert len(_doc_block("verifier").splitlines()) <= 25


def test_the_documented_verifier_accepts_real_logs() -> None:
    verify_run = _doc_verifier()
    events = _run(6)
    records = _records(events)
    ok, message = verify_run(records + records[2:4])
    assert ok, message
    assert message.endswith(_hashes(events)[-1].hex())
    confluent = [b"\x00\x00\x00\x00\x07" + raw[10:] for raw in records]
    assert verify_run(confluent)[0]
    assert verify_run(records[:3] + confluent[3:])[0]


@settings(max_examples=200)
@given(runs(min_size=2), st.data())
def test_the_documented_verifier_and_headrace_agree_on_damage(
    run: list[Event], data: st.DataObject
) -> None:
    verify_run = _doc_verifier()
    records = _records(run)
    fault = data.draw(st.sampled_from(["flip", "swap", "delete", "fork"]))
    k = data.draw(st.integers(0, len(records) - 2))
    if fault == "flip":
        raw = bytearray(records[k])
        i = data.draw(st.integers(10, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
        records[k] = bytes(raw)
    elif fault == "swap":
        records[k], records[k + 1] = records[k + 1], records[k]
    elif fault == "delete":
        del records[k]
    else:
        prev = decode_event(records[k]).prev_hash
        forged = replace(run[k], payload={"forged": True})
        records.insert(k + 1, seal([forged], prev)[0][1])
    ok, message = verify_run(records)
    assert not ok
    assert not verify(records).ok
    assert message.startswith("record ")


def test_every_event_type_is_documented() -> None:
    doc = DOC.read_text()
    section = doc[doc.index("## Event types") : doc.index("## Exactly which bytes")]
    documented = set(re.findall(r"^- `(\w+)` — ", section, re.M))
    assert documented == {t.value for t in EventType}
