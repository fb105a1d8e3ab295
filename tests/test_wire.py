"""Wire format selection and the Confluent framing.

The Confluent path runs against confluent-kafka's in-memory registry
(``mock://`` URLs), which exercises the real AvroSerializer/AvroDeserializer
but not HTTP to a real Schema Registry.
"""

from __future__ import annotations

import uuid

import pytest

from headrace.core.chain import Break
from headrace.core.envelope import Command, CommandType, Event, EventType
from headrace.errors import ErrorCode, HeadraceError
from headrace.settings import Settings
from headrace.wire import ConfluentWire, SingleObjectWire, wire_format


def _run(n: int) -> list[Event]:
    return [
        Event("acme", "r1", "order", 2, i, EventType.TaskScheduled, 10 + i, f"c{i}", {"i": i})
        for i in range(1, n + 1)
    ]


@pytest.fixture
def confluent() -> ConfluentWire:
    return ConfluentWire(f"mock://{uuid.uuid4().hex}")


def test_without_a_registry_url_the_wire_is_single_object() -> None:
    wire = wire_format(Settings(schema_registry_url=None))
    assert isinstance(wire, SingleObjectWire)
    assert wire.encode_event(_run(1)[0])[:2] == b"\xc3\x01"


def test_with_a_registry_url_the_wire_is_confluent() -> None:
    wire = wire_format(Settings(schema_registry_url="mock://selection"))
    assert isinstance(wire, ConfluentWire)
    assert wire.url == "mock://selection"


def test_the_registry_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADRACE_SCHEMA_REGISTRY_URL", "mock://from-env")
    assert isinstance(wire_format(Settings()), ConfluentWire)
    monkeypatch.delenv("HEADRACE_SCHEMA_REGISTRY_URL")
    assert isinstance(wire_format(Settings()), SingleObjectWire)


def test_confluent_framing_is_zero_then_schema_id_then_the_same_avro_body(
    confluent: ConfluentWire,
) -> None:
    soe = SingleObjectWire().seal(_run(3))
    framed = confluent.seal(_run(3))
    for (event, single), (same, raw) in zip(soe, framed, strict=True):
        assert raw[:1] == b"\x00"
        schema_id = int.from_bytes(raw[1:5], "big")
        registered = confluent.client.get_schema(schema_id)
        assert registered.schema_str == confluent.codec.event_schema.text
        assert raw[5:] == single[10:]
        assert same.hash == event.hash


def test_confluent_messages_decode_and_verify(confluent: ConfluentWire) -> None:
    sealed = confluent.seal(_run(4))
    for event, raw in sealed:
        assert confluent.decode_event(raw) == event
    report = confluent.verify([raw for _, raw in sealed])
    assert report.ok and report.count == 4


def test_a_log_mixing_both_framings_verifies(confluent: ConfluentWire) -> None:
    soe = [raw for _, raw in SingleObjectWire().seal(_run(4))]
    framed = [raw for _, raw in confluent.seal(_run(4))]
    assert confluent.verify([soe[0], framed[1], soe[2], framed[3]]).ok


def test_tampering_is_detected_in_confluent_framing(confluent: ConfluentWire) -> None:
    records = [raw for _, raw in confluent.seal(_run(4))]
    damaged = bytearray(records[2])
    damaged[-40] ^= 0xFF
    records[2] = bytes(damaged)
    report = confluent.verify(records)
    assert (report.reason, report.bad_seq) == (Break.TAMPERED, 3)


def test_commands_round_trip_through_the_registry(confluent: ConfluentWire) -> None:
    command = Command("c1", "acme", "r1", CommandType.DeliverSignal, 99, {"name": "paid"})
    raw = confluent.encode_command(command)
    assert raw[:1] == b"\x00"
    assert confluent.decode_command(raw) == command
    assert confluent.decode_command(SingleObjectWire().encode_command(command)) == command


def test_an_unregistered_schema_id_is_unknown_schema(confluent: ConfluentWire) -> None:
    raw = confluent.encode_event(_run(1)[0])
    with pytest.raises(HeadraceError) as info:
        confluent.decode_event(b"\x00\x00\x00\x03\xe7" + raw[5:])
    assert info.value.code is ErrorCode.UNKNOWN_SCHEMA
    assert "schema id 999" in info.value.message


def test_garbage_is_decode_failed_in_confluent_mode(confluent: ConfluentWire) -> None:
    with pytest.raises(HeadraceError) as info:
        confluent.decode_event(b"\x7fnot avro")
    assert info.value.code is ErrorCode.DECODE_FAILED


def test_single_object_mode_points_at_the_registry_for_confluent_bytes(
    confluent: ConfluentWire,
) -> None:
    raw = confluent.encode_event(_run(1)[0])
    with pytest.raises(HeadraceError) as info:
        SingleObjectWire().decode_event(raw)
    assert "HEADRACE_SCHEMA_REGISTRY_URL" in info.value.message
