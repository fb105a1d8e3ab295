"""What the loader, the validator and the linter report: one :class:`Finding` type.

A finding names its rule (``HR104``), a severity, a message that says what is
wrong and how to fix it, and where: the JSON path inside the definition
(``steps[2].retry.max_attempts``) and, when the document was read from text,
the line and column of that place (:class:`SourceMap`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

Path = tuple[str | int, ...]


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"error": 0, "warning": 1, "info": 2}[self.value]


def format_path(path: Iterable[str | int]) -> str:
    """``('steps', 2, 'retry')`` → ``steps[2].retry``; the empty path is ``<root>``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


@dataclass(slots=True)
class SourceMap:
    """Line/column (1-based) of every mapping key and list item of a document."""

    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Path) -> tuple[int, int] | None:
        """Position of ``path``, or of its nearest ancestor that has one."""
        p = tuple(path)
        while True:
            pos = self.positions.get(p)
            if pos is not None or not p:
                return pos
            p = p[:-1]


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem (or hint) about a definition."""

    rule: str
    name: str
    severity: Severity
    message: str
    path: Path = ()
    file: str | None = None
    line: int | None = None
    column: int | None = None

    @property
    def where(self) -> str:
        """``file:line:col`` (or as much of it as is known) for compiler-style output."""
        parts = [self.file or "<definition>"]
        if self.line is not None:
            parts.append(str(self.line))
            parts.append(str(self.column or 1))
        return ":".join(parts)

    def format(self) -> str:
        """``file:line:col: error HR104: message (at steps[2].next) [rule-name]``."""
        at = f" (at {format_path(self.path)})" if self.path else ""
        return f"{self.where}: {self.severity} {self.rule}: {self.message}{at} [{self.name}]"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": format_path(self.path) if self.path else "",
            "rule": self.rule,
            "name": self.name,
            "severity": str(self.severity),
            "message": self.message,
        }


def placed(
    findings: Iterable[Finding], source: SourceMap | None, file: str | None
) -> list[Finding]:
    """The findings with ``file`` and line/column filled in from ``source``, sorted."""
    out = []
    for f in findings:
        pos = source.locate(f.path) if source is not None and f.line is None else None
        out.append(
            Finding(
                f.rule,
                f.name,
                f.severity,
                f.message,
                f.path,
                file if file is not None else f.file,
                pos[0] if pos else f.line,
                pos[1] if pos else f.column,
            )
        )
    return sorted(out, key=_order)


def _order(f: Finding) -> tuple[Any, ...]:
    return (f.file or "", f.line or 0, f.column or 0, f.severity.rank, f.rule, f.message)


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity is Severity.ERROR for f in findings)


def step_label(step: Mapping[str, Any] | Any) -> str:
    """``step 'charge'`` for a step model or a raw step mapping (``a step`` if unnamed)."""
    name = step.get("name") if isinstance(step, Mapping) else getattr(step, "name", None)
    return f"step {name!r}" if isinstance(name, str) else "a step"
