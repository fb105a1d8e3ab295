"""``{field}`` templates: build a URL or a header value from the task input.

A template is text with placeholders in braces. ``{order.id}`` is a dotted
path into the input object; its value (a string, number or boolean) is
percent-encoded so it is safe as one URL path segment or query value.
``{+base}`` inserts the value as it is (for a value that is itself part of a
URL, such as a base address). ``{{`` and ``}}`` are literal braces. The
template is parsed once when the task config is first seen.

This syntax was chosen over jq for URLs because it is the one OpenAPI path
templates already use (``/orders/{orderId}``), so an ``operationId`` resolved
from an OpenAPI document expands with the same code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from headrace.sdk.errors import NonRetryable

_TOKEN = re.compile(r"\{\{|\}\}|\{(\+?)([A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)\}|[{}]")


@dataclass(frozen=True, slots=True)
class Placeholder:
    path: tuple[str, ...]
    raw: bool

    @property
    def name(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text and placeholders, in order."""

    source: str
    parts: tuple[str | Placeholder, ...]

    @property
    def placeholders(self) -> list[Placeholder]:
        return [p for p in self.parts if isinstance(p, Placeholder)]

    def expand(self, data: Any, *, encode: bool = True, what: str = "template") -> str:
        """The text with every placeholder replaced from ``data``.

        ``encode`` percent-encodes values (``{+x}`` never is). A missing value,
        ``null``, or an object/array is a non-retryable ``http.template`` failure:
        the input does not fit the config, and retrying will not change that.
        """
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = lookup(data, part.path)
            if value is None or isinstance(value, dict | list):
                shape = "missing or null" if value is None else f"a JSON {type(value).__name__}"
                raise NonRetryable(
                    "http.template",
                    f"{what} {self.source!r}: input field {part.name!r} is {shape}; it must be "
                    "a string, number or boolean — fix the step's input mapping",
                )
            text = scalar_text(value)
            out.append(text if part.raw or not encode else quote(text, safe=""))
        return "".join(out)


def parse_template(source: str) -> Template:
    """Parse ``source``; raises ``ValueError`` on an unmatched or malformed brace."""
    parts: list[str | Placeholder] = []
    pos = 0
    for m in _TOKEN.finditer(source):
        if m.start() > pos:
            parts.append(source[pos : m.start()])
        token = m.group(0)
        if token in ("{{", "}}"):
            parts.append(token[0])
        elif m.group(2) is not None:
            parts.append(Placeholder(tuple(m.group(2).split(".")), raw=bool(m.group(1))))
        else:
            raise ValueError(
                f"template {source!r}: stray {token!r} at position {m.start()} — a placeholder "
                "is {field} or {a.b}; write {{ or }} for a literal brace"
            )
        pos = m.end()
    if pos < len(source):
        parts.append(source[pos:])
    merged: list[str | Placeholder] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    return Template(source, tuple(merged))


def lookup(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
