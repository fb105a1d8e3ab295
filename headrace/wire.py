"""How events and commands are framed on Kafka: the one interface services use.

Two framings of the same Avro body:

* **single-object** (default): ``C3 01`` + 8-byte schema fingerprint + body.
  The schemas ship with headrace, so no registry is needed
  (:mod:`headrace.core.codec`).
* **Confluent wire format** (when ``HEADRACE_SCHEMA_REGISTRY_URL`` is set):
  ``00`` + 4-byte big-endian schema id + body, through
  ``confluent_kafka.schema_registry``'s AvroSerializer/AvroDeserializer, with
  subjects named after the record (``io.headrace.WorkflowEvent``,
  ``io.headrace.Command``) so that they do not depend on the topic prefix.

The hash chain is computed over the Avro body only, never over the framing, so
an event has the same ``hash`` in both formats and a log that mixes them (e.g.
during a switch to a registry) still verifies. A Confluent-mode reader also
reads single-object messages; the reverse needs the registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from headrace.core import chain
from headrace.core.codec import (
    CONFLUENT_HEADER_LEN,
    CONFLUENT_MAGIC,
    HEADER_LEN,
    MAGIC,
    Codec,
    command_from_record,
    command_to_record,
    default_codec,
    event_from_record,
    event_to_record,
)
from headrace.core.envelope import ZERO_HASH, Command, Event
from headrace.errors import ErrorCode, HeadraceError
from headrace.settings import Settings, get_settings


class WireFormat(Protocol):
    """Encode and decode the messages of the ``events`` and ``commands`` topics."""

    name: str

    def encode_event(self, event: Event) -> bytes: ...

    def decode_event(self, data: bytes) -> Event: ...

    def encode_command(self, command: Command) -> bytes: ...

    def decode_command(self, data: bytes) -> Command: ...

    def seal(self, events: Sequence[Event], prev_hash: bytes) -> list[tuple[Event, bytes]]:
        """Chain ``events`` after ``prev_hash``; each with its message value."""
        ...

    def verify(self, records: Iterable[bytes], **kwargs: Any) -> chain.ChainReport:
        """Verify one run's message values in log order (see :func:`chain.verify`)."""
        ...


class SingleObjectWire:
    """Avro single-object encoding with the schemas shipped in ``schemas/avro/``."""

    name = "single-object"

    def __init__(self, codec: Codec | None = None) -> None:
        self.codec = codec or default_codec()

    def encode_event(self, event: Event) -> bytes:
        return self.codec.encode_event(event)

    def decode_event(self, data: bytes) -> Event:
        return self.codec.decode_event(data)

    def encode_command(self, command: Command) -> bytes:
        return self.codec.encode_command(command)

    def decode_command(self, data: bytes) -> Command:
        return self.codec.decode_command(data)

    def seal(
        self, events: Sequence[Event], prev_hash: bytes = ZERO_HASH
    ) -> list[tuple[Event, bytes]]:
        return chain.seal(events, prev_hash, codec=self.codec)

    def verify(self, records: Iterable[bytes], **kwargs: Any) -> chain.ChainReport:
        return chain.verify(records, decode=self.decode_event, **kwargs)


class ConfluentWire:
    """Confluent wire format through a Schema Registry (``confluent_kafka.schema_registry``)."""

    name = "confluent"

    def __init__(
        self,
        url: str,
        *,
        registry_conf: dict[str, Any] | None = None,
        codec: Codec | None = None,
    ) -> None:
        try:
            from confluent_kafka.schema_registry import (
                SchemaRegistryClient,
                record_subject_name_strategy,
            )
            from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
        except ImportError as exc:
            raise HeadraceError(
                ErrorCode.DEPENDENCY_MISSING,
                f"HEADRACE_SCHEMA_REGISTRY_URL is set but the schema registry client is not "
                f"installed ({exc}) — pip install 'headrace[registry]', or unset the variable "
                "to use single-object encoding",
            ) from exc

        self.url = url
        self.codec = codec or default_codec()
        # new_client also understands confluent-kafka's in-memory "mock://" registries.
        factory = getattr(SchemaRegistryClient, "new_client", SchemaRegistryClient)
        self.client = factory({"url": url, **(registry_conf or {})})
        # Our exact schema text, never "latest": the body must be byte-for-byte
        # what the single-object codec writes, or the chain hash would differ.
        conf = {
            "auto.register.schemas": True,
            "use.latest.version": False,
            "normalize.schemas": False,
            "subject.name.strategy": record_subject_name_strategy,
        }
        event_text = self.codec.event_schema.text
        command_text = self.codec.command_schema.text
        self._ser_event = AvroSerializer(self.client, event_text, conf=conf)
        self._ser_command = AvroSerializer(self.client, command_text, conf=conf)
        self._de_event = AvroDeserializer(self.client, event_text)
        self._de_command = AvroDeserializer(self.client, command_text)

    def encode_event(self, event: Event) -> bytes:
        return self._serialize(self._ser_event, event_to_record(event), "WorkflowEvent")

    def decode_event(self, data: bytes) -> Event:
        if data[:2] == MAGIC:
            return self.codec.decode_event(data)
        return event_from_record(self._deserialize(self._de_event, data, "WorkflowEvent"))

    def encode_command(self, command: Command) -> bytes:
        return self._serialize(self._ser_command, command_to_record(command), "Command")

    def decode_command(self, data: bytes) -> Command:
        if data[:2] == MAGIC:
            return self.codec.decode_command(data)
        return command_from_record(self._deserialize(self._de_command, data, "Command"))

    def seal(
        self, events: Sequence[Event], prev_hash: bytes = ZERO_HASH
    ) -> list[tuple[Event, bytes]]:
        out = []
        for event, soe in chain.seal(events, prev_hash, codec=self.codec):
            framed = self.encode_event(event)
            if framed[CONFLUENT_HEADER_LEN:] != soe[HEADER_LEN:]:
                raise HeadraceError(
                    ErrorCode.INTERNAL,
                    f"event {event.run_key}#{event.seq}: the registry serializer wrote another "
                    "Avro body than the single-object codec, so its hash would not verify — "
                    f"check the schema registered under {self.codec.event_schema.name}",
                )
            out.append((event, framed))
        return out

    def verify(self, records: Iterable[bytes], **kwargs: Any) -> chain.ChainReport:
        return chain.verify(records, decode=self.decode_event, **kwargs)

    def _serialize(self, serializer: Any, record: dict[str, Any], what: str) -> bytes:
        try:
            data: bytes = serializer(record, None)
        except Exception as exc:
            raise HeadraceError(
                ErrorCode.ENCODE_FAILED,
                f"cannot encode {what} through the schema registry at {self.url}: {exc} — check "
                "that the registry is reachable and accepts the schema (compatibility settings)",
                retryable=_is_transport_error(exc),
            ) from exc
        return data

    def _deserialize(self, deserializer: Any, data: bytes, what: str) -> dict[str, Any]:
        if data[:1] != CONFLUENT_MAGIC:
            raise HeadraceError(
                ErrorCode.DECODE_FAILED,
                f"cannot decode {what}: first byte {bytes(data[:1]).hex() or 'none'} is neither "
                "the Confluent magic 00 nor single-object C3 01 — route it to the DLQ",
            )
        try:
            record: dict[str, Any] = deserializer(data, None)
        except Exception as exc:
            code = ErrorCode.UNKNOWN_SCHEMA if _is_registry_error(exc) else ErrorCode.DECODE_FAILED
            raise HeadraceError(
                code,
                f"cannot decode {what} (schema id {int.from_bytes(data[1:5], 'big')}) through "
                f"the schema registry at {self.url}: {exc}",
                retryable=_is_transport_error(exc),
            ) from exc
        return record


def _is_registry_error(exc: Exception) -> bool:
    return type(exc).__name__ == "SchemaRegistryError"


def _is_transport_error(exc: Exception) -> bool:
    return isinstance(exc, ConnectionError | TimeoutError) or "connect" in str(exc).lower()


def wire_format(settings: Settings | None = None) -> WireFormat:
    """The framing this deployment uses: Confluent if a registry URL is set, else single-object."""
    settings = settings or get_settings()
    if settings.schema_registry_url:
        return ConfluentWire(settings.schema_registry_url)
    return SingleObjectWire()
