"""Events and commands to bytes and back: Avro single-object encoding.

A message is ``C3 01`` + the writer schema's 8-byte CRC-64-AVRO fingerprint
(little-endian) + the Avro binary body. The schemas ship with headrace
(``schemas/avro/``), so any consumer decodes without a schema registry; a
message written with an older schema version is resolved into the current one
by its fingerprint. Payloads travel as canonical JSON strings.

The codec is on the orchestrator's hot path: schemas are parsed once, records
are written by closures compiled from the schema (:mod:`.avro_writer`, twice
as fast as fastavro's writer on these flat records) and read by fastavro's
schemaless reader.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from headrace.core.avro_writer import Writer, compile_writer
from headrace.core.envelope import Command, CommandType, Event, EventType, canonical_json
from headrace.core.schemas import COMMAND, EVENT, Schema, SchemaSet, default_schemas
from headrace.errors import ErrorCode, HeadraceError

MAGIC = b"\xc3\x01"
HEADER_LEN = 10  # magic + fingerprint
CONFLUENT_MAGIC = b"\x00"
CONFLUENT_HEADER_LEN = 5  # magic + 4-byte schema id
HASH_LEN = 32

_EVENT_TYPES = {m.value: m for m in EventType}
_COMMAND_TYPES = {m.value: m for m in CommandType}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
# Compiled writers by schema (None: fastavro writes it); schemas are few and live forever.
_WRITERS: dict[Schema, Writer | None] = {}


def event_to_record(event: Event) -> dict[str, Any]:
    """The Avro record of ``event`` (payload as canonical JSON)."""
    if len(event.prev_hash) != HASH_LEN or len(event.hash) != HASH_LEN:
        raise HeadraceError(
            ErrorCode.ENCODE_FAILED,
            f"event {event.run_key}#{event.seq}: prev_hash and hash must be 32 bytes, got "
            f"{len(event.prev_hash)} and {len(event.hash)} — seal events with headrace.core.chain",
        )
    if not _INT_MIN <= event.workflow_version <= _INT_MAX:
        # fastavro would write it as a long; readers in other languages would choke.
        raise HeadraceError(
            ErrorCode.ENCODE_FAILED,
            f"event {event.run_key}#{event.seq}: workflow_version {event.workflow_version} "
            "does not fit a 32-bit Avro int",
        )
    return {
        "event_id": event.event_id,
        "tenant": event.tenant,
        "run_id": event.run_id,
        "workflow_type": event.workflow_type,
        "workflow_version": event.workflow_version,
        "seq": event.seq,
        "type": event.type._value_,  # not .value: a Python-level property, on the hot path
        "time": event.time,
        "causation_id": event.causation_id,
        "correlation_id": event.correlation_id,
        "idempotency_key": event.idempotency_key,
        "traceparent": event.traceparent,
        "payload": _payload_text(event.payload, lambda: f"event {event.run_key}#{event.seq}"),
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def event_from_record(record: dict[str, Any]) -> Event:
    """Inverse of :func:`event_to_record`; also accepts ``time`` as a datetime."""
    return Event(
        event_id=record["event_id"],
        tenant=record["tenant"],
        run_id=record["run_id"],
        workflow_type=record["workflow_type"],
        workflow_version=record["workflow_version"],
        seq=record["seq"],
        type=_EVENT_TYPES.get(record["type"], EventType.Unknown),
        time=_millis(record["time"]),
        causation_id=record["causation_id"],
        correlation_id=record["correlation_id"],
        idempotency_key=record["idempotency_key"],
        traceparent=record["traceparent"],
        payload=_payload_value(record["payload"]),
        prev_hash=record["prev_hash"],
        hash=record["hash"],
    )


def command_to_record(command: Command) -> dict[str, Any]:
    """The Avro record of ``command`` (payload as canonical JSON)."""
    return {
        "command_id": command.command_id,
        "tenant": command.tenant,
        "run_id": command.run_id,
        "type": command.type._value_,
        "time": command.time,
        "causation_id": command.causation_id,
        "correlation_id": command.correlation_id,
        "traceparent": command.traceparent,
        "payload": _payload_text(command.payload, lambda: f"command {command.command_id}"),
    }


def command_from_record(record: dict[str, Any]) -> Command:
    """Inverse of :func:`command_to_record`; also accepts ``time`` as a datetime."""
    return Command(
        command_id=record["command_id"],
        tenant=record["tenant"],
        run_id=record["run_id"],
        type=_COMMAND_TYPES.get(record["type"], CommandType.Unknown),
        time=_millis(record["time"]),
        payload=_payload_value(record["payload"]),
        causation_id=record["causation_id"],
        correlation_id=record["correlation_id"],
        traceparent=record["traceparent"],
    )


def _payload_text(payload: Any, what: Callable[[], str]) -> str:
    """``payload`` as canonical JSON; ``what`` names the message, only when it fails."""
    try:
        return canonical_json(payload)
    except (TypeError, ValueError) as exc:
        raise HeadraceError(
            ErrorCode.ENCODE_FAILED,
            f"{what()}: payload is not plain JSON ({exc}) — use dicts, lists, str, int, "
            "finite floats, bool and None",
        ) from exc


def _payload_value(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"payload is a JSON {type(value).__name__}, not an object")
    return value


def _millis(value: int | datetime) -> int:
    # Readers that honour the timestamp-millis logical type (e.g. Confluent's
    # AvroDeserializer) hand back datetimes; the engine keeps epoch ms.
    if isinstance(value, datetime):
        return (value - _EPOCH) // _MS
    return value


class Codec:
    """Single-object encoding over a :class:`SchemaSet`."""

    def __init__(self, schemas: SchemaSet) -> None:
        self.schemas = schemas
        self.event_schema = schemas.current(EVENT)
        self.command_schema = schemas.current(COMMAND)

    def encode_event(self, event: Event) -> bytes:
        """``event`` as a single-object-encoded WorkflowEvent."""
        return self.encode_record(self.event_schema, event_to_record(event), f"event {event.seq}")

    def decode_event(self, data: bytes) -> Event:
        """The event in ``data``; raises ``HeadraceError`` (DECODE_FAILED, UNKNOWN_SCHEMA)."""
        record = self.decode_record(data, EVENT)
        try:
            return event_from_record(record)
        except (ValueError, TypeError, KeyError) as exc:
            raise _decode_error(f"WorkflowEvent fields are invalid: {exc}") from exc

    def encode_command(self, command: Command) -> bytes:
        """``command`` as a single-object-encoded Command."""
        return self.encode_record(
            self.command_schema, command_to_record(command), f"command {command.command_id}"
        )

    def decode_command(self, data: bytes) -> Command:
        """The command in ``data``; raises ``HeadraceError`` (DECODE_FAILED, UNKNOWN_SCHEMA)."""
        record = self.decode_record(data, COMMAND)
        try:
            return command_from_record(record)
        except (ValueError, TypeError, KeyError) as exc:
            raise _decode_error(f"Command fields are invalid: {exc}") from exc

    @staticmethod
    def encode_record(schema: Schema, record: dict[str, Any], what: str = "record") -> bytes:
        """Frame ``record`` written with ``schema``: magic, fingerprint, Avro body."""
        try:
            write = _WRITERS[schema]
        except KeyError:
            write = _WRITERS[schema] = compile_writer(schema.parsed)
        try:
            if write is not None:
                return MAGIC + schema.fingerprint + write(record)
            out = BytesIO()
            out.write(MAGIC)
            out.write(schema.fingerprint)
            schemaless_writer(out, schema.parsed, record)
        except Exception as exc:
            raise HeadraceError(
                ErrorCode.ENCODE_FAILED,
                f"{what} does not fit Avro schema {schema.name}: {exc!r} — check field types "
                "(strings must be valid Unicode, ints within range)",
            ) from exc
        return out.getvalue()

    def decode_record(self, data: bytes, expect: str) -> dict[str, Any]:
        """The Avro record in single-object-encoded ``data``, resolved into the current schema."""
        writer = self.writer_of(data)
        if writer.name != expect:
            raise _decode_error(f"message holds a {writer.name}, expected a {expect}")
        buf = BytesIO(data)
        buf.seek(HEADER_LEN)
        reader = self.schemas.reader_for(writer)
        try:
            record = schemaless_reader(buf, writer.parsed, reader.parsed if reader else None)
        except Exception as exc:
            raise _decode_error(
                f"Avro body of {writer.name} ({len(data) - HEADER_LEN} bytes) is truncated "
                f"or corrupt: {exc!r}"
            ) from exc
        if buf.tell() != len(data):
            raise _decode_error(
                f"{len(data) - buf.tell()} bytes follow the end of the {writer.name} body"
            )
        if not isinstance(record, dict):
            raise _decode_error(f"Avro body of {writer.name} is not a record")
        return record

    def writer_of(self, data: bytes) -> Schema:
        """The writer schema named by ``data``'s single-object header."""
        if data[:2] != MAGIC:
            hint = (
                " (it looks Confluent-framed: set HEADRACE_SCHEMA_REGISTRY_URL)"
                if data[:1] == CONFLUENT_MAGIC
                else ""
            )
            raise _decode_error(
                f"message does not start with the Avro single-object magic C3 01 "
                f"(starts with {bytes(data[:2]).hex() or 'nothing'}){hint}"
            )
        if len(data) < HEADER_LEN:
            raise _decode_error(f"message is {len(data)} bytes, shorter than its header")
        fp = bytes(data[2:HEADER_LEN])
        writer = self.schemas.get(fp)
        if writer is None:
            raise HeadraceError(
                ErrorCode.UNKNOWN_SCHEMA,
                f"message was written with schema fingerprint {fp.hex()}, which this "
                "process does not know — upgrade headrace, or add that schema version to "
                "schemas/avro/history/",
            )
        return writer


def body_of(data: bytes) -> memoryview:
    """The Avro body of a framed message (single-object or Confluent wire format).

    The hash chain is computed over this body, so it is the same in both framings.
    """
    if data[:2] == MAGIC:
        header = HEADER_LEN
    elif data[:1] == CONFLUENT_MAGIC:
        header = CONFLUENT_HEADER_LEN
    else:
        raise _decode_error(
            f"unknown framing (first bytes {bytes(data[:2]).hex() or 'none'}): expected "
            "C3 01 (Avro single-object) or 00 (Confluent wire format)"
        )
    if len(data) < header:
        raise _decode_error(f"message is {len(data)} bytes, shorter than its header")
    return memoryview(data)[header:]


def _decode_error(message: str) -> HeadraceError:
    return HeadraceError(
        ErrorCode.DECODE_FAILED,
        f"cannot decode message: {message} — it is corrupt or not a headrace message; "
        "route it to the DLQ",
    )


_default: Codec | None = None


def default_codec() -> Codec:
    """The codec over the schemas shipped with headrace."""
    global _default
    if _default is None:
        _default = Codec(default_schemas())
    return _default


def encode_event(event: Event) -> bytes:
    """``event`` as Avro single-object bytes."""
    return default_codec().encode_event(event)


def decode_event(data: bytes) -> Event:
    """The event in Avro single-object bytes ``data``."""
    return default_codec().decode_event(data)


def encode_command(command: Command) -> bytes:
    """``command`` as Avro single-object bytes."""
    return default_codec().encode_command(command)


def decode_command(data: bytes) -> Command:
    """The command in Avro single-object bytes ``data``."""
    return default_codec().decode_command(data)
