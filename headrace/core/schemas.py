"""The Avro schemas of the wire contract, loaded from ``schemas/avro/`` at run time.

A :class:`SchemaSet` knows every schema this process can read, by its
CRC-64-AVRO fingerprint (the Rabin fingerprint of the schema's Parsing
Canonical Form, as Avro single-object encoding carries it), and which of them
is *current* for each record name — the one we write with and read into.

``schemas/avro/*.avsc`` are the current schemas; ``schemas/avro/history/*.avsc``
are earlier versions, kept so that events written by an older release still
decode (Avro schema resolution maps them onto the current schema). When you
change a schema, copy the old file into ``history/`` first.

The schema folder ships inside the package: ``headrace/schemas`` is a symlink
to ``schemas/avro`` and is package data, so wheel and editable installs find
it next to the code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from headrace.errors import ErrorCode, HeadraceError

EVENT = "io.headrace.WorkflowEvent"
COMMAND = "io.headrace.Command"
TASK_DISPATCH = "io.headrace.TaskDispatch"
TASK_RESULT = "io.headrace.TaskResult"

_PACKAGE = Path(__file__).resolve().parent.parent


def schema_dir() -> Path:
    """The folder holding the ``*.avsc`` files: package data first, then the source tree."""
    for candidate in (_PACKAGE / "schemas", _PACKAGE.parent / "schemas" / "avro"):
        if (candidate / "workflow_event.avsc").is_file():
            return candidate
    raise HeadraceError(
        ErrorCode.CONFIG_INVALID,
        f"the Avro schemas are missing: neither {_PACKAGE / 'schemas'} nor "
        f"{_PACKAGE.parent / 'schemas' / 'avro'} holds workflow_event.avsc — "
        "reinstall headrace (the schemas are package data)",
    )


@dataclass(frozen=True, slots=True, eq=False)
class Schema:
    """One Avro record schema, ready for fastavro."""

    name: str  # full name, e.g. io.headrace.WorkflowEvent
    source: Mapping[str, Any]  # the .avsc as written (logical types included)
    canonical: str  # Parsing Canonical Form
    fingerprint: bytes  # CRC-64-AVRO of `canonical`, 8 bytes little-endian as on the wire
    parsed: Any  # fastavro-parsed, without logical types: `time` stays epoch ms

    @property
    def symbols(self) -> dict[str, list[str]]:
        """Enum name -> symbols, for every enum field of the record."""
        out: dict[str, list[str]] = {}
        for f in self.source.get("fields", []):
            t = f["type"]
            if isinstance(t, dict) and t.get("type") == "enum":
                out[t["name"]] = list(t["symbols"])
        return out

    @property
    def text(self) -> str:
        """The schema as JSON text (what a schema registry is given)."""
        return json.dumps(self.source)


def make_schema(source: Mapping[str, Any] | str) -> Schema:
    """Parse one record schema (a dict or JSON text) and fingerprint it."""
    data = json.loads(source) if isinstance(source, str) else dict(source)
    try:
        canonical = to_parsing_canonical_form(data)
        parsed = parse_schema(_without_logical_types(data), named_schemas={})
    except Exception as exc:
        raise HeadraceError(
            ErrorCode.CONFIG_INVALID, f"Avro schema {data.get('name')!r} is invalid: {exc}"
        ) from exc
    name = data["name"] if "." in data["name"] else f"{data.get('namespace', '')}.{data['name']}"
    return Schema(
        name=name.lstrip("."),
        source=data,
        canonical=canonical,
        fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
        parsed=parsed,
    )


def _without_logical_types(node: Any) -> Any:
    # Logical types change nothing on the wire and are not part of the canonical
    # form; dropping them keeps fastavro from turning `time` into a datetime.
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


class SchemaSet:
    """Every schema this process reads, by fingerprint; the current one per record name."""

    def __init__(self, current: Iterable[Schema], older: Iterable[Schema] = ()) -> None:
        self._current: dict[str, Schema] = {}
        self._by_fingerprint: dict[bytes, Schema] = {}
        for schema in current:
            if schema.name in self._current:
                raise HeadraceError(
                    ErrorCode.CONFIG_INVALID,
                    f"two current schemas named {schema.name} — keep one in schemas/avro/ "
                    "and move the other to schemas/avro/history/",
                )
            self._current[schema.name] = schema
            self._by_fingerprint[schema.fingerprint] = schema
        for schema in older:
            self.register(schema)

    def current(self, name: str) -> Schema:
        """The schema we write ``name`` records with."""
        try:
            return self._current[name]
        except KeyError:
            raise HeadraceError(
                ErrorCode.UNKNOWN_SCHEMA, f"no current schema named {name} in {schema_dir()}"
            ) from None

    def get(self, fp: bytes) -> Schema | None:
        """The schema with fingerprint ``fp``, if known."""
        return self._by_fingerprint.get(fp)

    def register(self, schema: Schema) -> Schema:
        """Teach this set another writer schema (e.g. an older version of a record)."""
        if schema.name not in self._current:
            raise HeadraceError(
                ErrorCode.CONFIG_INVALID,
                f"writer schema {schema.name} has no current version to resolve into",
            )
        return self._by_fingerprint.setdefault(schema.fingerprint, schema)

    def reader_for(self, writer: Schema) -> Schema | None:
        """The reader schema to resolve ``writer`` into, or None when it is current."""
        current = self._current[writer.name]
        return None if current is writer else current

    def __iter__(self) -> Any:
        return iter(self._by_fingerprint.values())


def load_schema_set(directory: Path | None = None) -> SchemaSet:
    """Read ``*.avsc`` (current) and ``history/*.avsc`` (older writers) from ``directory``."""
    root = directory or schema_dir()
    current = [_load(p) for p in sorted(root.glob("*.avsc"))]
    older = [_load(p) for p in sorted((root / "history").glob("*.avsc"))]
    return SchemaSet(current, older)


def _load(path: Path) -> Schema:
    try:
        return make_schema(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise HeadraceError(ErrorCode.CONFIG_INVALID, f"{path}: not JSON: {exc}") from exc


@lru_cache(maxsize=1)
def default_schemas() -> SchemaSet:
    """The schemas shipped with headrace, loaded once."""
    return load_schema_set()
