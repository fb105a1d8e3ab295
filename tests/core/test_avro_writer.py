"""The compiled Avro writer writes exactly what fastavro writes."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from cwe_strategies import INT64, commands, events
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.core.avro_writer import compile_writer, zigzag
from headrace.core.codec import command_to_record, event_to_record
from headrace.core.envelope import Command, Event
from headrace.core.schemas import COMMAND, EVENT, default_schemas


def _fastavro(parsed: Any, record: dict[str, Any]) -> bytes:
    out = BytesIO()
    schemaless_writer(out, parsed, record)
    return out.getvalue()


@settings(max_examples=300)
@given(events())
def test_events_are_written_as_fastavro_writes_them(event: Event) -> None:
    parsed = default_schemas().current(EVENT).parsed
    write = compile_writer(parsed)
    assert write is not None
    record = event_to_record(event)
    assert write(record) == _fastavro(parsed, record)


@settings(max_examples=300)
@given(commands)
def test_commands_are_written_as_fastavro_writes_them(command: Command) -> None:
    parsed = default_schemas().current(COMMAND).parsed
    write = compile_writer(parsed)
    assert write is not None
    record = command_to_record(command)
    assert write(record) == _fastavro(parsed, record)


def _values(t: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of Avro type ``t`` (the types compile_writer handles)."""
    if isinstance(t, str) and t in named:
        return _values(named[t], named)
    if isinstance(t, list):
        return st.one_of(*(_values(branch, named) for branch in t))
    if isinstance(t, dict):
        if "name" in t:
            named[t["name"]] = t
        if t["type"] == "enum":
            return st.sampled_from(t["symbols"])
        if t["type"] == "fixed":
            return st.binary(min_size=t["size"], max_size=t["size"])
        return _values(t["type"], named)
    return {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": INT64,
        "string": st.text(),
        "bytes": st.binary(),
    }[t]


def _records(parsed: Any) -> st.SearchStrategy[dict[str, Any]]:
    named: dict[str, Any] = {}
    return st.fixed_dictionaries({f["name"]: _values(f["type"], named) for f in parsed["fields"]})


@settings(max_examples=300)
@given(st.data())
def test_every_shipped_schema_it_compiles_is_written_as_fastavro_writes_it(
    data: st.DataObject,
) -> None:
    compiled = [(s, compile_writer(s.parsed)) for s in default_schemas()]
    schema, write = data.draw(st.sampled_from([(s, w) for s, w in compiled if w is not None]))
    assert write is not None
    record = data.draw(_records(schema.parsed))
    assert write(record) == _fastavro(schema.parsed, record)


@given(INT64)
def test_longs_are_zigzag_varints_as_in_fastavro(n: int) -> None:
    parsed = parse_schema(
        {"type": "record", "name": "L", "fields": [{"name": "n", "type": "long"}]}
    )
    assert zigzag(n) == _fastavro(parsed, {"n": n})


SCHEMA = {
    "type": "record",
    "name": "R",
    "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "blob", "type": "bytes"},
        {"name": "maybe", "type": ["string", "null"]},
        {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["a", "b"]}},
        {"name": "again", "type": "K"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}


@given(
    st.booleans(),
    st.binary(),
    st.none() | st.text(),
    st.sampled_from(["a", "b"]),
    st.sampled_from(["a", "b"]),
)
def test_other_supported_types_match_fastavro(
    flag: bool, blob: bytes, maybe: str | None, kind: str, again: str
) -> None:
    parsed = parse_schema(SCHEMA)
    record = {"flag": flag, "blob": blob, "maybe": maybe, "kind": kind, "again": again}
    write = compile_writer(parsed)
    assert write is not None
    assert write(record) == _fastavro(parsed, record)  # `note` takes its default


@pytest.mark.parametrize(
    "field_type",
    [
        "double",
        {"type": "array", "items": "string"},
        {"type": "map", "values": "long"},
        ["null", "string", "long"],
        {"type": "record", "name": "Inner", "fields": []},
    ],
)
def test_schemas_with_other_types_are_left_to_fastavro(field_type: Any) -> None:
    parsed = parse_schema(
        {"type": "record", "name": "X", "fields": [{"name": "f", "type": field_type}]}
    )
    assert compile_writer(parsed) is None


@pytest.mark.parametrize(
    "record",
    [
        {"flag": 1, "blob": b"", "maybe": None, "kind": "a", "again": "a"},
        {"flag": True, "blob": "text", "maybe": None, "kind": "a", "again": "a"},
        {"flag": True, "blob": b"", "maybe": 3, "kind": "a", "again": "a"},
        {"flag": True, "blob": b"", "maybe": None, "kind": "c", "again": "a"},
        {"flag": True, "blob": b"", "maybe": None, "kind": "a"},
    ],
)
def test_records_that_do_not_fit_raise(record: dict[str, Any]) -> None:
    write = compile_writer(parse_schema(SCHEMA))
    assert write is not None
    with pytest.raises((TypeError, ValueError)):
        write(record)


@pytest.mark.parametrize("value", [1.5, 1.0, "3", 2**63])
def test_a_long_must_be_an_integer_in_range(value: Any) -> None:
    # stricter than fastavro, which writes 1.5 as 1
    parsed = parse_schema(
        {"type": "record", "name": "L", "fields": [{"name": "n", "type": "long"}]}
    )
    write = compile_writer(parsed)
    assert write is not None
    with pytest.raises((TypeError, ValueError)):
        write({"n": value})
