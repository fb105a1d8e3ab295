"""CloudEvents on ``ingress``: read one from a Kafka record, write one for a client.

Both CloudEvents Kafka content modes are accepted, through the SDK's Kafka
binding (``cloudevents.core.bindings.kafka``):

* **binary** — attributes in ``ce_*`` headers, ``content-type`` for
  ``datacontenttype``, the data as the record value;
* **structured** — the whole event as JSON in the value, ``content-type:
  application/cloudevents+json`` (a record without ``ce_*`` headers and without
  a content type is read as structured too, so ``kcat -P`` works without ``-H``).

The binding has sharp edges (notes/libraries.md §5) that this module files off
before it is called: a header value that is not UTF-8 (or has no value) would
raise from deep inside it, and turning headers into a dict silently drops a
repeated header — both are refused here with a clear reason; the record key is
not handed over (the binding would decode it into ``partitionkey``, and a
binary key would raise); and data is decoded here, not by the binding, which
quietly hands back a string when JSON data does not parse.

Everything that is wrong with a record raises :class:`Rejected` with an
:class:`~headrace.errors.ErrorCode`; the router dead-letters it.

Ids derived from an event (run ids, command ids, signal ids) are UUIDv5 over
its ``source`` and ``id``: the CloudEvents spec makes that pair unique per
event, so a redelivered or re-sent event maps to the same run and command.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from headrace.errors import ErrorCode

START_TYPE = "io.headrace.run.start"
SIGNAL_TYPE = "io.headrace.run.signal"
DEFAULT_TENANT = "default"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"

TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# A run id ends up in record keys (`<tenant>/<run_id>`) and file names of tools:
# printable, no whitespace, bounded.
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/+=-]{0,199}$")

_JSON_CT = re.compile(r"^(application|text)/([a-zA-Z0-9.\-]+\+)?json(;.*)?$")
_NS = uuid.UUID("3b0e6c55-0f3c-5b8e-9a52-68656164696e")


class Rejected(Exception):
    """A record the router cannot act on; ``code`` and ``message`` go into the DLQ headers."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Incoming:
    """One CloudEvent read from ``ingress``, its data decoded."""

    id: str
    source: str
    type: str
    tenant: str
    data: Any
    mode: str  # "binary" | "structured"
    subject: str | None = None
    traceparent: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The event as trigger expressions see it: attributes plus ``data``."""
        out = dict(self.attributes)
        if isinstance(self.data, bytes):
            out["data_base64"] = base64.b64encode(self.data).decode()
        else:
            out["data"] = self.data
        return out


class _RawData(JSONFormat):
    """JSON format whose ``read_data`` leaves the bytes alone, so bad JSON is seen as bad."""

    def read_data(self, body: bytes, datacontenttype: str | None) -> Any:
        return body


_RAW = _RawData()
_JSON = JSONFormat()
_UNSET = object()


def parse(
    value: bytes | None, headers: Sequence[tuple[str, bytes | str | None]] | None
) -> Incoming:
    """The CloudEvent in a record (key not needed), or :class:`Rejected` saying why not."""
    ce_headers: dict[str, bytes] = {}
    content_type: str | None = None
    for name, raw in headers or ():
        lname = name.lower()
        if not (lname.startswith("ce_") or lname == "content-type"):
            continue
        if raw is None:
            raise Rejected(ErrorCode.BAD_CLOUDEVENT, f"header {name!r} has no value")
        data = raw.encode() if isinstance(raw, str) else bytes(raw)
        if lname in ce_headers:
            raise Rejected(
                ErrorCode.BAD_CLOUDEVENT,
                f"header {name!r} appears more than once; a CloudEvent attribute has one value",
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise Rejected(ErrorCode.BAD_CLOUDEVENT, f"header {name!r} is not UTF-8 text") from None
        ce_headers[lname] = data
        if lname == "content-type":
            content_type = text
    if any(h.startswith("ce_") for h in ce_headers):
        return _binary(value, ce_headers, content_type)
    if content_type is not None and not content_type.lower().startswith(STRUCTURED_CONTENT_TYPE):
        raise Rejected(
            ErrorCode.BAD_CLOUDEVENT,
            f"not a CloudEvent: no ce_* headers (binary mode) and content-type {content_type!r} "
            f"is not {STRUCTURED_CONTENT_TYPE} (structured mode)",
        )
    return _structured(value, ce_headers, declared=content_type is not None)


def _binary(value: bytes | None, headers: dict[str, bytes], content_type: str | None) -> Incoming:
    # The binding parses `time` with dateutil (a tenth of the routing cost); the
    # router only passes it on to trigger expressions, so it is checked here.
    raw_time = headers.pop("ce_time", None)
    time_text = None if raw_time is None else _checked_time(raw_time.decode())
    message = ce_kafka.KafkaMessage(headers=headers, key=None, value=value or b"")
    try:
        event = ce_kafka.from_binary(message, _RAW, CloudEvent)
    except Exception as exc:
        raise Rejected(ErrorCode.BAD_CLOUDEVENT, f"not a valid CloudEvent: {_why(exc)}") from None
    return _incoming(event, _decode_data(value, content_type), "binary", time_text)


def _checked_time(text: str) -> str:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise Rejected(
            ErrorCode.BAD_CLOUDEVENT, f"ce_time {text!r} is not an RFC 3339 timestamp"
        ) from None
    return text


def _structured(value: bytes | None, headers: dict[str, bytes], *, declared: bool) -> Incoming:
    if not value:
        raise Rejected(ErrorCode.BAD_CLOUDEVENT, "not a CloudEvent: empty value, no ce_* headers")
    try:
        doc = json.loads(value)
    except ValueError as exc:
        if declared:  # it says it is a structured CloudEvent: its JSON is broken
            raise Rejected(
                ErrorCode.DECODE_FAILED, f"structured CloudEvent is not valid JSON: {exc}"
            ) from None
        raise Rejected(
            ErrorCode.BAD_CLOUDEVENT,
            f"not a CloudEvent: no ce_* headers (binary mode) and the value is not JSON ({exc})",
        ) from None
    if not isinstance(doc, dict) or "specversion" not in doc:
        raise Rejected(
            ErrorCode.BAD_CLOUDEVENT,
            "not a CloudEvent: structured mode needs a JSON object with `specversion`, "
            "`id`, `source` and `type` (or send binary mode with ce_* headers)",
        )
    message = ce_kafka.KafkaMessage(headers=headers, key=None, value=value)
    try:
        event = ce_kafka.from_structured(message, _JSON, CloudEvent)
    except Exception as exc:
        raise Rejected(ErrorCode.BAD_CLOUDEVENT, f"not a valid CloudEvent: {_why(exc)}") from None
    time_text = doc.get("time")
    return _incoming(
        event, event.get_data(), "structured", time_text if isinstance(time_text, str) else None
    )


def _decode_data(value: bytes | None, content_type: str | None) -> Any:
    if not value:
        return None
    if content_type is None or _JSON_CT.match(content_type):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise Rejected(
                ErrorCode.DECODE_FAILED,
                f"data is not valid JSON ({exc}); content type "
                f"{content_type or '(none, JSON assumed)'}",
            ) from None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return bytes(value)


def _incoming(event: BaseCloudEvent, data: Any, mode: str, time_text: str | None) -> Incoming:
    attrs = event.get_attributes()
    if attrs.get("specversion") != "1.0":
        raise Rejected(
            ErrorCode.BAD_CLOUDEVENT,
            f"CloudEvents specversion {attrs.get('specversion')!r} is not supported; send 1.0",
        )
    tenant = attrs.get("tenant", DEFAULT_TENANT)
    if not isinstance(tenant, str) or not TENANT_PATTERN.match(tenant):
        raise Rejected(
            ErrorCode.BAD_CLOUDEVENT,
            f"tenant {tenant!r} is not a valid tenant name (letters, digits, '_', '.', '-'; "
            "at most 64)",
        )
    # `time` as the sender wrote it (the SDK fills in "now" when there is none)
    view: dict[str, Any] = {k: v for k, v in attrs.items() if k != "time"}
    if time_text is not None:
        view["time"] = time_text
    trace = attrs.get("traceparent")
    subject = attrs.get("subject")
    return Incoming(
        id=str(attrs["id"]),
        source=str(attrs["source"]),
        type=str(attrs["type"]),
        tenant=tenant,
        data=data,
        mode=mode,
        subject=subject if isinstance(subject, str) else None,
        traceparent=trace if isinstance(trace, str) else None,
        attributes=view,
    )


def _why(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


# ---------------------------------------------------------------------------
# ids derived from an event


def derived_id(kind: str, source: str, event_id: str, *extra: str) -> str:
    """A UUIDv5 over ``kind``, the event's ``source`` and ``id`` (and ``extra``)."""
    return _uuid5("\n".join((kind, source, event_id, *extra)))


_NS_BYTES = _NS.bytes


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(_NS, name))`` without building UUID objects (4x faster, per record)."""
    h = bytearray(hashlib.sha1(_NS_BYTES + name.encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50
    h[8] = (h[8] & 0x3F) | 0x80
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def start_run_id(source: str, event_id: str) -> str:
    """The run id an ``io.headrace.run.start`` event without ``run_id`` gets."""
    return derived_id("start", source, event_id)


def trigger_run_id(source: str, event_id: str, workflow: str) -> str:
    """The run id a trigger of ``workflow`` gives the run an event starts (one per workflow)."""
    return derived_id("trigger", source, event_id, workflow)


# ---------------------------------------------------------------------------
# writing events (the CLI and tests produce them like any client would)


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    """A CloudEvent as a Kafka record for ``ingress``."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def encode_event(
    type_: str,
    source: str,
    data: Any,
    *,
    event_id: str | None = None,
    tenant: str | None = None,
    structured: bool = False,
    key: str | None = None,
    extensions: dict[str, str] | None = None,
) -> OutgoingEvent:
    """``data`` (JSON) as a CloudEvent record in binary (default) or structured mode."""
    attrs: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": source,
        "type": type_,
        "datacontenttype": "application/json",
    }
    if tenant is not None:
        attrs["tenant"] = tenant
    attrs.update(extensions or {})
    event = CloudEvent(attrs, data)
    if structured:
        message = ce_kafka.to_structured(event, _JSON, lambda e: None)
        value = message.value
    else:
        message = ce_kafka.to_binary(event, _JSON, lambda e: None)
        # The binding writes a dict as JSON but a list or a scalar with str().
        value = json.dumps(data, ensure_ascii=False).encode()
    headers = [(k, v) for k, v in message.headers.items()]
    return OutgoingEvent(key.encode() if key is not None else None, value, headers)
