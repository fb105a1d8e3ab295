"""The envelope mirrors the Avro schemas, and its helpers are deterministic."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import pytest
from cwe_strategies import events
from hypothesis import given
from hypothesis import strategies as st

from headrace.core.envelope import (
    ZERO_HASH,
    Command,
    CommandType,
    Event,
    EventType,
    canonical_json,
    digest,
    effect_id,
    event_id_for,
)
from headrace.core.schemas import COMMAND, EVENT, default_schemas


def test_event_type_enum_equals_the_avsc_symbols_in_order() -> None:
    symbols = default_schemas().current(EVENT).symbols["EventType"]
    assert [m.value for m in EventType] == symbols
    assert len(EventType) >= 50


def test_command_type_enum_equals_the_avsc_symbols_in_order() -> None:
    symbols = default_schemas().current(COMMAND).symbols["CommandType"]
    assert [m.value for m in CommandType] == symbols


def test_enums_default_to_unknown_in_the_schemas() -> None:
    for name, record in ((EVENT, "EventType"), (COMMAND, "CommandType")):
        fields = default_schemas().current(name).source["fields"]
        enum = next(f["type"] for f in fields if f["name"] == "type")
        assert enum["name"] == record
        assert enum["default"] == "Unknown"


def test_hash_fields_are_the_last_two_of_the_event_schema() -> None:
    fields = default_schemas().current(EVENT).source["fields"]
    assert [f["name"] for f in fields[-2:]] == ["prev_hash", "hash"]


def test_canonical_json_sorts_keys_drops_whitespace_and_keeps_unicode() -> None:
    assert canonical_json({"b": 1, "a": [1, {"d": "é", "c": None}]}) == (
        '{"a":[1,{"c":null,"d":"é"}],"b":1}'
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_canonical_json_refuses_non_finite_floats(bad: float) -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": bad})


def test_canonical_json_refuses_a_value_that_contains_itself_and_recovers() -> None:
    looped: list[object] = [1]
    looped.append({"again": looped})
    with pytest.raises(ValueError, match="contains itself"):
        canonical_json(looped)
    shared = {"a": 1}
    # the encoder is reused: the failure above must not poison later calls
    assert canonical_json([shared, shared, {"x": [shared]}]) == '[{"a":1},{"a":1},{"x":[{"a":1}]}]'


def test_canonical_json_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError):
        canonical_json({"x": {1, 2}})
    with pytest.raises(TypeError):
        canonical_json({"x": b"bytes"})


@given(st.dictionaries(st.text(), st.recursive(st.none() | st.integers() | st.text(), st.lists)))
def test_canonical_json_is_independent_of_key_order(value: dict) -> None:
    shuffled = dict(reversed(list(value.items())))
    assert canonical_json(value) == canonical_json(shuffled)
    assert json.loads(canonical_json(value)) == value


def test_event_id_is_derived_from_tenant_run_and_seq() -> None:
    a = event_id_for("acme", "r1", 1)
    assert a == event_id_for("acme", "r1", 1)
    assert len({a, event_id_for("acme", "r1", 2), event_id_for("acme2", "r1", 1)}) == 3
    event = Event("acme", "r1", "order", 1, 1, EventType.RunStarted, 0, "c1")
    assert event.event_id == a


def test_effect_id_is_stable_and_carries_the_suffix() -> None:
    assert effect_id("r1", 7) == "r1:7"
    assert effect_id("r1", 7, "timer") == "r1:7:timer"


def test_digest_is_sha256_of_prev_then_body() -> None:
    assert digest(ZERO_HASH, b"abc") == hashlib.sha256(bytes(32) + b"abc").digest()


def test_run_key_is_tenant_slash_run() -> None:
    command = Command("c1", "acme", "r1", CommandType.StartRun, 0)
    assert command.run_key == "acme/r1"


def test_prev_hash_and_hash_are_the_last_event_fields_as_in_the_schema() -> None:
    assert [f.name for f in dataclasses.fields(Event)][-2:] == ["prev_hash", "hash"]


@given(events())
def test_with_chain_keeps_every_other_field(event: Event) -> None:
    chained = event.with_chain(b"\x01" * 32, b"\x02" * 32)
    assert chained == dataclasses.replace(event, prev_hash=b"\x01" * 32, hash=b"\x02" * 32)


def test_with_chain_sets_both_hashes_and_nothing_else() -> None:
    event = Event("acme", "r1", "order", 1, 1, EventType.RunStarted, 0, "c1", payload={"a": 1})
    chained = event.with_chain(b"\x01" * 32, b"\x02" * 32)
    assert (chained.prev_hash, chained.hash) == (b"\x01" * 32, b"\x02" * 32)
    assert chained.with_chain(ZERO_HASH, ZERO_HASH) == event
