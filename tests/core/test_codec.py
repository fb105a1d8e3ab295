"""Avro single-object codec: framing, round trips, schema evolution, clear errors."""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import json
import re
import tomllib
from pathlib import Path

import pytest
from cwe_strategies import commands, events
from fastavro.schema import to_parsing_canonical_form
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.core import codec
from headrace.core.codec import Codec, decode_command, decode_event, encode_command, encode_event
from headrace.core.envelope import Command, CommandType, Event, EventType
from headrace.core.schemas import (
    COMMAND,
    EVENT,
    SchemaSet,
    default_schemas,
    load_schema_set,
    make_schema,
    schema_dir,
)
from headrace.errors import ErrorCode, HeadraceError

ROOT = Path(__file__).resolve().parents[2]

# Pinned so that a schema change is deliberate: when one of these changes, copy
# the previous .avsc into schemas/avro/history/ (see its README) and update
# the fingerprint table in docs/events.md.
PINNED = {EVENT: "1151aa53f22fab6d", COMMAND: "f45988ab7c184f49"}


def _event(**changes: object) -> Event:
    base = Event(
        tenant="acme",
        run_id="r1",
        workflow_type="order",
        workflow_version=3,
        seq=17,
        type=EventType.TaskCompleted,
        time=1_735_689_600_000,
        causation_id="cmd-1",
        payload={"step": "charge", "result": {"ok": True, "amount": 12.5}},
        idempotency_key="r1/charge",
    )
    return base if not changes else Event(**{**_fields(base), **changes})  # type: ignore[arg-type]


def _cycle() -> dict[str, object]:
    looped: dict[str, object] = {}
    looped["self"] = looped
    return looped


def _fields(event: Event) -> dict[str, object]:
    return {name: getattr(event, name) for name in Event.__dataclass_fields__}


# --- schemas on disk and in the package ------------------------------------


def test_schemas_are_found_inside_the_package() -> None:
    assert schema_dir() == ROOT / "headrace" / "schemas"
    shipped = sorted(p.name for p in schema_dir().glob("*.avsc"))
    source = sorted(p.name for p in (ROOT / "schemas" / "avro").glob("*.avsc"))
    assert (
        shipped
        == source
        == [
            "command.avsc",
            "task_dispatch.avsc",
            "task_result.avsc",
            "workflow_event.avsc",
        ]
    )
    for name in shipped:
        assert (schema_dir() / name).read_bytes() == (ROOT / "schemas/avro" / name).read_bytes()


def test_package_data_ships_every_schema_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["headrace"]
    files = [
        str(p.relative_to(ROOT / "headrace"))
        for p in (ROOT / "headrace" / "schemas").rglob("*.avsc")
    ]
    assert files
    for f in files:
        assert any(fnmatch.fnmatch(f, pattern) for pattern in patterns), f


@pytest.mark.parametrize("name", [EVENT, COMMAND])
def test_current_fingerprints_are_pinned(name: str) -> None:
    fingerprint = default_schemas().current(name).fingerprint.hex()
    assert fingerprint == PINNED[name], (
        f"{name} changed: move the old .avsc to schemas/avro/history/ and update PINNED "
        "and docs/events.md"
    )


def _rabin(data: bytes) -> int:
    # CRC-64-AVRO exactly as the Avro specification spells it out.
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_fingerprint_is_the_spec_rabin_of_the_canonical_form_little_endian() -> None:
    for schema in default_schemas():
        expected = _rabin(schema.canonical.encode()).to_bytes(8, "little")
        assert schema.fingerprint == expected
    # The Avro spec's own test value for the schema "null".
    assert _rabin(to_parsing_canonical_form("null").encode()) == 7195948357588979594


# --- round trips -----------------------------------------------------------


def test_event_bytes_start_with_magic_and_fingerprint() -> None:
    raw = encode_event(_event())
    assert raw[:2] == b"\xc3\x01"
    assert raw[2:10] == bytes.fromhex(PINNED[EVENT])
    assert raw[-64:] == bytes(64)  # prev_hash and hash, last and raw


def test_event_round_trips_and_keeps_time_as_epoch_millis() -> None:
    event = _event(correlation_id="order-9", traceparent="00-abc-def-01")
    back = decode_event(encode_event(event))
    assert back == event
    assert isinstance(back.time, int)
    assert back.type is EventType.TaskCompleted


def test_payload_travels_as_canonical_json() -> None:
    raw = encode_event(_event(payload={"b": [1, "é"], "a": None}))
    assert b'{"a":null,"b":[1,"\xc3\xa9"]}' in raw


@settings(max_examples=300)
@given(events())
def test_any_event_round_trips(event: Event) -> None:
    assert decode_event(encode_event(event)) == event


@settings(max_examples=300)
@given(commands)
def test_any_command_round_trips(command: Command) -> None:
    assert decode_command(encode_command(command)) == command


# --- errors ----------------------------------------------------------------


def _decode_error(data: bytes, decode: object = decode_event) -> HeadraceError:
    with pytest.raises(HeadraceError) as info:
        decode(data)  # type: ignore[operator]
    return info.value


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "magic"),
        (b"\xc3", "magic"),
        (b'{"json": true}', "magic"),
        (b"\xc3\x01\x28\x35", "shorter than its header"),
    ],
)
def test_garbage_is_refused_with_decode_failed(data: bytes, needle: str) -> None:
    error = _decode_error(data)
    assert error.code is ErrorCode.DECODE_FAILED
    assert needle in error.message


def test_confluent_framed_bytes_get_a_hint_about_the_registry() -> None:
    error = _decode_error(b"\x00\x00\x00\x00\x01" + encode_event(_event())[10:])
    assert error.code is ErrorCode.DECODE_FAILED
    assert "HEADRACE_SCHEMA_REGISTRY_URL" in error.message


def test_unknown_fingerprint_is_unknown_schema() -> None:
    raw = encode_event(_event())
    error = _decode_error(raw[:2] + b"\xff" * 8 + raw[10:])
    assert error.code is ErrorCode.UNKNOWN_SCHEMA
    assert "ffffffffffffffff" in error.message


def test_every_truncation_is_refused() -> None:
    raw = encode_event(_event())
    for end in range(len(raw)):
        assert _decode_error(raw[:end]).code is ErrorCode.DECODE_FAILED


def test_trailing_bytes_are_refused() -> None:
    error = _decode_error(encode_event(_event()) + b"\x00")
    assert "follow the end" in error.message


def test_a_command_is_not_decoded_as_an_event_and_vice_versa() -> None:
    command = Command("c1", "acme", "r1", CommandType.FireTimer, 5)
    assert "expected a io.headrace.WorkflowEvent" in _decode_error(encode_command(command)).message
    wrong = _decode_error(encode_event(_event()), decode_command)
    assert wrong.code is ErrorCode.DECODE_FAILED


def test_a_payload_that_is_not_an_object_is_refused() -> None:
    c = codec.default_codec()
    record = codec.event_to_record(_event())
    record["payload"] = "[1,2]"
    error = _decode_error(c.encode_record(c.event_schema, record))
    assert "not an object" in error.message


@settings(max_examples=500)
@given(st.binary(max_size=300), st.booleans())
def test_decoding_random_bytes_raises_only_headrace_errors(tail: bytes, framed: bool) -> None:
    data = (b"\xc3\x01" + bytes.fromhex(PINNED[EVENT]) + tail) if framed else tail
    try:
        decode_event(data)
    except HeadraceError as error:
        assert error.code in (ErrorCode.DECODE_FAILED, ErrorCode.UNKNOWN_SCHEMA)


@settings(max_examples=300)
@given(st.data())
def test_damaged_events_decode_or_raise_headrace_errors(data: st.DataObject) -> None:
    raw = bytearray(encode_event(_event()))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(HeadraceError):
        decode_event(bytes(raw))


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"payload": {"x": float("nan")}}, "not plain JSON"),
        ({"payload": {"x": {1, 2}}}, "not plain JSON"),
        ({"payload": _cycle()}, "not plain JSON"),
        ({"hash": b"short"}, "32 bytes"),
        ({"tenant": "\ud800"}, "does not fit"),
        ({"workflow_version": 2**31}, "32-bit Avro int"),
        ({"seq": 2**63}, "does not fit"),
    ],
)
def test_unencodable_events_raise_encode_failed(change: dict[str, object], needle: str) -> None:
    with pytest.raises(HeadraceError) as info:
        encode_event(_event(**change))
    assert info.value.code is ErrorCode.ENCODE_FAILED
    assert needle in info.value.message


# --- schema evolution ------------------------------------------------------


def _older_event_schema() -> dict[str, object]:
    # What an earlier release might have written: no traceparent, fewer types.
    source = copy.deepcopy(dict(default_schemas().current(EVENT).source))
    source["fields"] = [f for f in source["fields"] if f["name"] != "traceparent"]
    enum = next(f["type"] for f in source["fields"] if f["name"] == "type")
    enum["symbols"] = ["RunStarted", "RunCompleted", "Unknown"]
    return source


def _newer_event_schema() -> dict[str, object]:
    # What a later release might write: a new event type and a new field.
    source = copy.deepcopy(dict(default_schemas().current(EVENT).source))
    enum = next(f["type"] for f in source["fields"] if f["name"] == "type")
    enum["symbols"] = [*enum["symbols"], "SomethingNew"]
    source["fields"].insert(-2, {"name": "region", "type": "string", "default": "eu"})
    return source


def _codec_with(*writers: dict[str, object]) -> Codec:
    current = list(default_schemas())
    return Codec(SchemaSet(current, [make_schema(w) for w in writers]))


def test_an_older_writer_schema_decodes_into_the_current_one() -> None:
    c = _codec_with(_older_event_schema())
    older = make_schema(_older_event_schema())
    record = codec.event_to_record(_event(type=EventType.RunCompleted))
    del record["traceparent"]
    raw = c.encode_record(older, record)
    assert raw[2:10] == older.fingerprint != c.event_schema.fingerprint
    event = c.decode_event(raw)
    assert event == _event(type=EventType.RunCompleted)
    assert event.traceparent is None


def test_a_newer_event_type_reads_as_unknown() -> None:
    c = _codec_with(_newer_event_schema())
    newer = make_schema(_newer_event_schema())
    record = {**codec.event_to_record(_event()), "type": "SomethingNew", "region": "us"}
    assert c.decode_event(c.encode_record(newer, record)).type is EventType.Unknown


def test_without_the_older_schema_its_messages_are_unknown_schema() -> None:
    older = make_schema(_older_event_schema())
    record = codec.event_to_record(_event(type=EventType.RunCompleted))
    del record["traceparent"]
    raw = Codec.encode_record(older, record)
    assert _decode_error(raw).code is ErrorCode.UNKNOWN_SCHEMA


def test_history_folder_schemas_are_loaded_as_writers(tmp_path: Path) -> None:
    for p in schema_dir().glob("*.avsc"):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / "workflow_event.old.avsc").write_text(json.dumps(_older_event_schema()))
    loaded = load_schema_set(tmp_path)
    older = make_schema(_older_event_schema())
    assert loaded.get(older.fingerprint) is not None
    assert loaded.reader_for(loaded.get(older.fingerprint)) is loaded.current(EVENT)  # type: ignore[arg-type]


def test_a_bad_schema_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "workflow_event.avsc").write_text("{not json")
    with pytest.raises(HeadraceError) as info:
        load_schema_set(tmp_path)
    assert info.value.code is ErrorCode.CONFIG_INVALID
    assert "workflow_event.avsc" in info.value.message


def test_docs_table_lists_every_current_schema() -> None:
    doc = (ROOT / "docs" / "events.md").read_text()
    for name in (EVENT, COMMAND):
        row = re.search(rf"`{re.escape(name)}` \| `([0-9a-f]{{16}})`", doc)
        assert row and row.group(1) == default_schemas().current(name).fingerprint.hex()
