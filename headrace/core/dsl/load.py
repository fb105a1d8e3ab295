"""Read a definition from JSON or YAML text, keeping where every part came from.

:func:`read_document` parses the text and records the line and column of every
mapping key and list item (:class:`SourceMap`), so that any later finding can
point at ``file:line:col``. :func:`parse_definition` turns the document into a
:class:`Definition` and translates pydantic's errors into findings that say
what is wrong and how to fix it — all of them, one per problem.
:func:`load_definition` is the one call for deploy paths: it raises a
:class:`HeadraceError` listing every error (validation included).

YAML is read with YAML 1.2 scalars: only ``true``/``false`` are booleans
(``on``, ``yes``, ``no`` stay strings) and dates stay strings, so a YAML file
means the same as its JSON twin.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import yaml
from pydantic import ValidationError

from headrace.core.dsl.findings import Finding, Path, Severity, SourceMap, has_errors, placed
from headrace.core.dsl.model import Definition
from headrace.core.dsl.pydantic_errors import translate
from headrace.core.dsl.registry import declare
from headrace.core.dsl.validate import validate
from headrace.errors import ErrorCode, HeadraceError

PARSE_ERROR = declare(
    "HR001", "parse-error", Severity.ERROR, "the file is not valid JSON/YAML or holds no mapping"
)
DUPLICATE_KEY = declare(
    "HR002", "duplicate-key", Severity.ERROR, "a mapping repeats a key (the last one would win)"
)


@dataclass(slots=True)
class Document:
    """A parsed JSON/YAML document, its source map and any parse findings."""

    data: Any
    source: SourceMap
    file: str | None = None
    findings: list[Finding] = field(default_factory=list)


@dataclass(slots=True)
class Loaded:
    """The outcome of loading one definition: the model (if it parsed) and every finding."""

    document: Document
    definition: Definition | None
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return self.definition is not None and not has_errors(self.findings)


# ---------------------------------------------------------------------------
# YAML with YAML 1.2 scalars


class _Loader(yaml.SafeLoader):
    pass


_REPLACED = {
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp",
}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _read_yaml(text: str, file: str | None) -> Document:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(None, SourceMap(), file, [_parse_error("the document is empty")])
        source = SourceMap({(): (node.start_mark.line + 1, node.start_mark.column + 1)})
        dups: list[Finding] = []
        _walk_yaml(node, (), source.positions, dups, set())
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        f = _parse_error(f"not valid YAML: {what}")
        if mark is not None:
            f = Finding(
                f.rule, f.name, f.severity, f.message, (), file, mark.line + 1, mark.column + 1
            )
        return Document(None, SourceMap(), file, [f])
    except yaml.YAMLError as exc:
        return Document(None, SourceMap(), file, [_parse_error(f"not valid YAML: {exc}")])
    finally:
        loader.dispose()
    return Document(data, source, file, dups)


def _walk_yaml(
    node: yaml.Node,
    path: Path,
    positions: dict[Path, tuple[int, int]],
    dups: list[Finding],
    stack: set[int],
) -> None:
    if id(node) in stack:  # a recursive alias: its positions are recorded already
        return
    stack.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = str(key_node.value)
            pos = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in seen:
                dups.append(
                    Finding(
                        DUPLICATE_KEY.id,
                        DUPLICATE_KEY.name,
                        DUPLICATE_KEY.severity,
                        f"key {key!r} appears twice in this mapping (first on line {seen[key]})"
                        " — remove one; YAML would silently keep the last",
                        (*path, key),
                        line=pos[0],
                        column=pos[1],
                    )
                )
            else:
                seen[key] = pos[0]
                positions[(*path, key)] = pos
            _walk_yaml(value_node, (*path, key), positions, dups, stack)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            positions[(*path, i)] = (item.start_mark.line + 1, item.start_mark.column + 1)
            _walk_yaml(item, (*path, i), positions, dups, stack)
    stack.discard(id(node))


# ---------------------------------------------------------------------------
# JSON, with a small scanner for positions (PyYAML cannot read every JSON text)

_WS = re.compile(r"[ \t\n\r]*")
_ATOM = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null")


class _JsonPositions:
    """Walks JSON text that ``json.loads`` accepted, recording where each key/item starts."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.positions: dict[Path, tuple[int, int]] = {}
        self.dups: list[tuple[Path, int, int, int]] = []

    def where(self, offset: int) -> tuple[int, int]:
        lo, hi = 0, len(self.line_starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.line_starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1, offset - self.line_starts[lo] + 1

    def skip(self, i: int) -> int:
        m = _WS.match(self.text, i)
        return m.end() if m else i

    def value(self, i: int, path: Path) -> int:
        i = self.skip(i)
        ch = self.text[i]
        if ch == "{":
            i = self.skip(i + 1)
            seen: dict[str, int] = {}
            if self.text[i] == "}":
                return i + 1
            while True:
                i = self.skip(i)
                key, end = json.decoder.scanstring(self.text, i + 1)  # type: ignore[attr-defined]
                pos = self.where(i)
                if key in seen:
                    self.dups.append(((*path, key), pos[0], pos[1], seen[key]))
                else:
                    seen[key] = pos[0]
                    self.positions[(*path, key)] = pos
                i = self.skip(end)
                i = self.value(i + 1, (*path, key))  # past ':'
                i = self.skip(i)
                if self.text[i] == "}":
                    return i + 1
                i += 1  # ','
        if ch == "[":
            i = self.skip(i + 1)
            if self.text[i] == "]":
                return i + 1
            n = 0
            while True:
                i = self.skip(i)
                self.positions[(*path, n)] = self.where(i)
                i = self.skip(self.value(i, (*path, n)))
                n += 1
                if self.text[i] == "]":
                    return i + 1
                i += 1
        if ch == '"':
            return int(json.decoder.scanstring(self.text, i + 1)[1])  # type: ignore[attr-defined]
        m = _ATOM.match(self.text, i)
        if m is None:  # NaN/Infinity, which json.loads accepts
            m = re.compile(r"-?(?:NaN|Infinity)").match(self.text, i)
        assert m is not None
        return m.end()


def _read_json(text: str, file: str | None) -> Document:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        f = _parse_error(f"not valid JSON: {exc.msg}")
        return Document(
            None,
            SourceMap(),
            file,
            [Finding(f.rule, f.name, f.severity, f.message, (), file, exc.lineno, exc.colno)],
        )
    scan = _JsonPositions(text)
    scan.positions[()] = scan.where(scan.skip(0))
    scan.value(0, ())
    dups = [
        Finding(
            DUPLICATE_KEY.id,
            DUPLICATE_KEY.name,
            DUPLICATE_KEY.severity,
            f"key {path[-1]!r} appears twice in this object (first on line {first}) — remove one",
            path,
            line=line,
            column=col,
        )
        for path, line, col, first in scan.dups
    ]
    return Document(data, SourceMap(scan.positions), file, dups)


def _parse_error(message: str) -> Finding:
    return Finding(PARSE_ERROR.id, PARSE_ERROR.name, PARSE_ERROR.severity, message)


# ---------------------------------------------------------------------------
# public entry points


def read_document(text: str, file: str | None = None, fmt: str | None = None) -> Document:
    """Parse ``text`` as JSON or YAML (``fmt``, else by ``file``'s extension, else by content)."""
    if fmt is None:
        suffix = FsPath(file).suffix.lower() if file else ""
        if suffix == ".json":
            fmt = "json"
        elif suffix in (".yaml", ".yml"):
            fmt = "yaml"
        else:
            fmt = "json" if text.lstrip().startswith(("{", "[")) else "yaml"
    if fmt == "json":
        doc = _read_json(text, file)
    elif fmt == "yaml":
        doc = _read_yaml(text, file)
    else:
        raise ValueError(f"unknown format {fmt!r}: use 'json' or 'yaml'")
    if doc.data is not None and not isinstance(doc.data, dict) and not doc.findings:
        doc.findings.append(
            _parse_error(
                f"a definition is a mapping with 'type', 'version' and 'steps', "
                f"not a {type(doc.data).__name__}"
            )
        )
    return doc


def parse_definition(doc: Document) -> tuple[Definition | None, list[Finding]]:
    """Build the model from a parsed document; pydantic errors become findings."""
    if not isinstance(doc.data, dict):
        return None, []
    try:
        return Definition.model_validate(doc.data), []
    except ValidationError as exc:
        return None, translate(exc, doc.data)


def load(text: str, file: str | None = None, fmt: str | None = None) -> Loaded:
    """Parse, build and validate a definition; every finding carries file:line:col.

    Only the error-severity checks run here (no lint warnings); use
    :func:`headrace.core.dsl.lint.lint_text` for the full set.
    """
    doc = read_document(text, file, fmt)
    findings = list(doc.findings)
    definition = None
    if not has_errors(findings):
        definition, errors = parse_definition(doc)
        findings += errors
        if definition is not None:
            findings += validate(definition)
    return Loaded(doc, definition, placed(findings, doc.source, file))


def load_definition(text: str, file: str | None = None, fmt: str | None = None) -> Definition:
    """The definition in ``text``, or ``HeadraceError(DEFINITION_INVALID)`` listing every error."""
    result = load(text, file, fmt)
    errors = [f for f in result.findings if f.severity is Severity.ERROR]
    if errors or result.definition is None:
        lines = "\n".join(f.format() for f in errors)
        raise HeadraceError(
            ErrorCode.DEFINITION_INVALID,
            f"{file or 'definition'} has {len(errors)} error(s) — fix them and retry "
            f"(`headrace lint` shows warnings too):\n{lines}",
        )
    return result.definition


def load_file(path: str | FsPath) -> Definition:
    """Read and validate the definition in a .json/.yaml/.yml file."""
    p = FsPath(path)
    return load_definition(p.read_text(encoding="utf-8"), str(p))
